"""The Python API: ``from_pretrained`` (local folder, Hub id offline against a fake cache with the network
cut), ``EchoModel.predict`` / ``predict_many`` / ``embed``, the same numbers on every call and in another
process."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import coreecho_jax
from coreecho_jax import predict
from coreecho_jax.data.video.video_io import write_video
from coreecho_jax.errors import DataError
from coreecho_jax.evaluation import conformal, multiclip
from coreecho_jax.inference import weights_folder
from coreecho_jax.inference.embeddings import Embeddings
from coreecho_jax.inference.weights_folder import WeightsError
from coreecho_jax.models.coreecho import CoReEcho
from coreecho_jax.weights import api
from tests.conftest import run_python
from tests.data.test_video_io import echo_like
from tests.inference.test_predict import tiny_config
from tests.inference.test_weights import make_run

REPO_ID = "owner/echo-weights"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def run(root):
    return make_run(root)


@pytest.fixture(scope="module")
def folder(run, root):
    return coreecho_jax.export_weights(run, root / "exported")


@pytest.fixture(scope="module")
def model(folder):
    return coreecho_jax.from_pretrained(folder)


@pytest.fixture(scope="module")
def videos(root):
    frames, _ = echo_like(t=40)
    other, _ = echo_like(t=36)
    return (
        write_video(root / "echo.avi", frames, fps=50.0),
        write_video(root / "other.avi", other[:, ::-1], fps=50.0),
    )


# ----------------------------------------------------------------------------- predict, predict_many, embed


@pytest.mark.slow  # compiles the tiny model's forward pass
def test_predict_gives_a_frozen_typed_result_whose_dict_is_predict_s_json(model, folder, videos):
    result = model.predict(videos[0])
    expected = predict.predict_file(tiny_config(), videos[0], folder)
    assert result.to_dict() == expected
    assert result.ok and result.path == str(videos[0]) and result.error is None
    assert result.ef == expected["ef_mean"] and result.clip_spread == expected["ef_std"]
    assert result.ef_interval == tuple(expected["ef_interval"]) and result.interval_level == 0.9
    assert result.summary == expected["summary"] and re.fullmatch(
        r"EF \d+ \[\d+, \d+\] \(90 %\)", result.summary
    )
    assert result.ef_per_clip == tuple(expected["ef_per_clip"]) and result.clip_starts == (0, 12, 25)
    assert result.category == expected["ef_category"] and result.crop == "sector"
    assert result.crop_box == tuple(expected["crop_box"]) and result.num_frames == 40 and result.fps == 50.0
    assert result.flags == () and result.shift_percentile is None  # a folder has no training embeddings
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ef = 0.0
    copy = result.to_dict()
    copy["ef_per_clip"].append(1.0)
    assert result.to_dict() == expected  # to_dict gives a copy


@pytest.mark.slow  # compiles the tiny model's forward pass once
def test_predict_many_streams_results_keeps_going_past_bad_files_and_compiles_once(
    model, videos, root, monkeypatch
):
    import jax

    jax.clear_caches()
    traces = []
    forward = CoReEcho.__call__
    monkeypatch.setattr(
        CoReEcho, "__call__", lambda self, *a, **k: traces.append(1) or forward(self, *a, **k)
    )
    still = write_video(root / "still.avi", np.repeat(echo_like(t=1)[0], 30, axis=0), fps=50.0)
    paths = [videos[0], root / "missing.avi", still, videos[1]]
    stream = model.predict_many(iter(paths))
    assert isinstance(stream, types.GeneratorType) and traces == []  # nothing read before it is asked
    results = list(stream)
    assert [r.path for r in results] == [str(p) for p in paths]
    assert [r.ok for r in results] == [True, False, False, True]
    assert results[1].error == f"{root / 'missing.avi'}: file not found (expected an AVI/MP4/DICOM video)"
    assert (
        results[2].error == f"{still}: all 30 frames show the same picture (a still image), not an echo loop"
    )
    assert results[1].to_dict() == {"video": str(root / "missing.avi"), "error": results[1].error}
    assert results[0].ef_per_clip == model.predict(videos[0]).ef_per_clip
    assert results[3].ef_per_clip != results[0].ef_per_clip and results[3].clip_starts == (0, 10, 21)
    assert len(traces) == 1  # one trace (one compilation) for every video of the stream


@pytest.mark.slow  # runs the tiny model
def test_flags_name_what_the_notes_say(model, root):
    frames, _ = echo_like(t=14)  # 14 frames at 25 fps: enough for a cycle, shorter than a clip span (16)
    path = write_video(root / "short_slow.avi", frames, fps=25.0)
    with pytest.warns(UserWarning, match="25.0 fps is far from the training data's"):
        prepared = model.prepare(path)
    inf = float("inf")
    unbounded = conformal.Calibration(
        level=0.9,
        n=(12, 12, 3),
        quantiles=(2.0, 3.0, inf),
        clips_per_video=3,
        weights_sha256=model.weights_sha256,
    )
    where = root / "calibration.json"
    result = predict.predict_clips(
        model.trained, prepared, predict.PredictionContext(3, unbounded, where, "", None)
    )
    assert result["ef_category"] == "normal" and result["ef_interval"] == [0.0, 100.0]
    assert result["flags"] == ["fps_far_from_training", "padded", "interval_unbounded"]
    assert any(note.startswith("EF interval [0, 100]: ") for note in result["notes"])
    result = predict.predict_clips(
        model.trained, prepared, predict.PredictionContext(3, None, where, "why", None)
    )
    assert result["flags"] == ["fps_far_from_training", "padded", "no_interval"]
    assert "no EF interval: why" in result["notes"] and set(result["flags"]) <= set(predict.FLAGS)


@pytest.mark.slow  # compiles the encoder
def test_embed_a_file_its_clips_or_an_array(model, videos):
    by_path = model.embed(videos[0])
    prepared = model.prepare(videos[0])
    by_clips = model.embed(prepared)
    by_array = model.embed(prepared.clips)
    assert by_path.clip_embeddings.shape == (3, 128) and by_path.clip_embeddings.dtype == np.float32
    np.testing.assert_array_equal(by_path.embedding, by_path.clip_embeddings.mean(axis=0))
    for other in (by_clips, by_array):
        np.testing.assert_array_equal(other.clip_embeddings, by_path.clip_embeddings)
    np.testing.assert_array_equal(by_path.clip_starts, [0, 12, 25])
    assert by_path.path == str(videos[0]) and by_array.path is None and by_array.clip_starts is None
    with pytest.raises(
        DataError, match=r"embed: expected clips \[K, 8, 32, 32, 3\], got shape \(3, 8, 64, 64, 3\)"
    ):
        model.embed(np.zeros((3, 8, 64, 64, 3), np.float32))


@pytest.mark.slow  # a run workdir with training embeddings: the shift score path
def test_a_run_workdir_loads_too_and_gives_the_shift_score(run, videos, tmp_path):
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    m = coreecho_jax.from_pretrained(workdir)  # the training embeddings are read at the first predict
    rng = np.random.default_rng(0)
    clip_embeddings = rng.normal(size=(12, 3, 128)).astype(np.float32)
    videos_ = multiclip.VideoPredictions(
        [f"v{i}" for i in range(12)], np.full(12, 50.0), np.full((12, 3), 50.0), np.zeros((12, 3), int)
    )
    Embeddings(videos_, clip_embeddings, "train", m.trained.origin).save(workdir / "embeddings_train.npz")
    result = m.predict(videos[0])
    assert result.shift_percentile is not None and 0 <= result.shift_percentile <= 100
    assert result.shift_distance == result.to_dict()["shift_distance"]
    assert ("far_from_training" in result.flags) == (result.shift_percentile >= predict.SHIFT_FLAG_PERCENTILE)


# ----------------------------------------------------------------------------- the same numbers everywhere


@pytest.mark.slow  # a second process loads and compiles the model again
def test_the_same_file_gives_the_same_numbers_on_every_call_and_in_another_process(model, folder, videos):
    first, second = model.predict(videos[0]), model.predict(videos[0])
    assert first.to_dict() == second.to_dict()
    embedding = model.embed(videos[0]).clip_embeddings
    np.testing.assert_array_equal(model.embed(videos[0]).clip_embeddings, embedding)
    code = f"""
import json, jax
jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py sets it
import coreecho_jax
m = coreecho_jax.from_pretrained({str(folder)!r})
r = m.predict({str(videos[0])!r})
print(json.dumps({{"result": r.to_dict(), "embedding": m.embed({str(videos[0])!r}).clip_embeddings.tolist()}}))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    other = json.loads(done.stdout.strip().splitlines()[-1])
    assert other["result"] == first.to_dict()
    np.testing.assert_array_equal(np.array(other["embedding"], np.float32), embedding)


# ----------------------------------------------------------------------------- names and the Hub


def test_a_local_name_that_is_neither_a_folder_nor_a_hub_id_and_a_revision_for_a_folder(folder, tmp_path):
    with pytest.raises(WeightsError, match=r"nope/a/b: no such folder, and not a Hugging Face Hub id"):
        coreecho_jax.from_pretrained(tmp_path / "nope/a/b")
    with pytest.raises(
        WeightsError, match=r"a local folder has no revision \(revision='v1' is for a Hub id\)"
    ):
        coreecho_jax.from_pretrained(folder, revision="v1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        WeightsError, match=r"empty: not a weights folder \(no manifest.json\) nor a run workdir"
    ):
        coreecho_jax.from_pretrained(tmp_path / "empty")


def test_a_hub_id_without_huggingface_hub_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed: import fails
    with pytest.raises(WeightsError) as info:
        coreecho_jax.from_pretrained(REPO_ID)
    assert str(info.value) == (
        f"{REPO_ID}: no such folder; to read it as a Hugging Face Hub id: pip install huggingface_hub"
    )


class LocalEntryNotFoundError(FileNotFoundError):
    """huggingface_hub.errors.LocalEntryNotFoundError's stand-in (a FileNotFoundError there too)."""


def hub_cache(root: Path, folder: Path) -> Path:
    """A Hugging Face cache holding ``folder`` as REPO_ID at COMMIT, tag ``v1`` and branch ``main``, laid
    out as huggingface_hub lays it out: ``models--owner--name/{refs,blobs,snapshots/<commit>}``, each
    snapshot file a link to its blob."""
    storage = root / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True)
    for ref in ("main", "v1"):
        (storage / "refs" / ref).write_text(COMMIT)
    (storage / "blobs").mkdir()
    snapshot = storage / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for path in folder.iterdir():
        blob = storage / "blobs" / weights_folder.file_sha256(path)
        blob.write_bytes(path.read_bytes())
        (snapshot / path.name).symlink_to(blob)
    return root / "hub"


def fake_huggingface_hub(monkeypatch, calls: list) -> None:
    """``huggingface_hub`` with a ``snapshot_download`` that reads the cache as the real one does offline
    (refs -> commit -> snapshot folder, huggingface_hub 2.4.0), records its arguments, and fails the test
    when it would go online; every socket connection fails too."""

    def snapshot_download(
        repo_id, *, revision=None, cache_dir=None, local_files_only=False, allow_patterns=None
    ):
        calls.append(
            dict(
                repo_id=repo_id, revision=revision, local_files_only=local_files_only, patterns=allow_patterns
            )
        )
        storage = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
        ref = storage / "refs" / (revision or "main")
        commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision or "") else None
        commit = commit or (ref.read_text() if ref.is_file() else None)
        snapshot = storage / "snapshots" / str(commit)
        if commit is not None and snapshot.is_dir():
            return str(snapshot)
        if local_files_only:
            raise LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder")
        raise AssertionError("the network would be used")

    def no_network(*args, **kwargs):
        raise AssertionError("a socket connection was attempted")

    hub = types.ModuleType("huggingface_hub")
    hub.snapshot_download = snapshot_download
    hub.errors = types.SimpleNamespace(LocalEntryNotFoundError=LocalEntryNotFoundError)
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    monkeypatch.setattr(socket.socket, "connect", no_network)


def test_a_hub_id_offline_reads_the_cache_only_with_a_pinned_revision(folder, tmp_path, monkeypatch):
    cache = hub_cache(tmp_path, folder)
    calls = []
    fake_huggingface_hub(monkeypatch, calls)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = coreecho_jax.from_pretrained(REPO_ID, cache_dir=cache)
    assert calls == [
        dict(repo_id=REPO_ID, revision=None, local_files_only=True, patterns=list(weights_folder.FILES))
    ]
    assert m.name == REPO_ID and m.trained.source == cache / f"models--owner--echo-weights/snapshots/{COMMIT}"
    assert m.weights_sha256 == json.loads((folder / "config.json").read_text())["weights_sha256"]
    for revision in ("v1", COMMIT):
        pinned = coreecho_jax.from_pretrained(REPO_ID, revision, cache_dir=cache, local_files_only=False)
        assert calls[-1]["revision"] == revision and calls[-1]["local_files_only"] is True  # the env wins
        assert pinned.name == f"{REPO_ID}@{revision}"
    with pytest.raises(WeightsError) as info:
        coreecho_jax.from_pretrained(REPO_ID, "v2", cache_dir=cache)
    assert str(info.value) == (
        f"{REPO_ID}@v2: not in the Hugging Face cache, and offline (HF_HUB_OFFLINE=1 or local_files_only=True): "
        "fetch it once online, or give a local folder"
    )


def test_local_files_only_and_the_online_call_and_a_changed_cached_file(folder, tmp_path, monkeypatch):
    cache = hub_cache(tmp_path, folder)
    calls = []
    fake_huggingface_hub(monkeypatch, calls)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(WeightsError, match=r"@v2: not in the Hugging Face cache, and offline"):
        coreecho_jax.from_pretrained(REPO_ID, "v2", cache_dir=cache, local_files_only=True)
    assert calls[-1]["local_files_only"] is True
    coreecho_jax.from_pretrained(REPO_ID, "v1", cache_dir=cache)  # online: the fake finds it cached
    assert calls[-1] == dict(
        repo_id=REPO_ID, revision="v1", local_files_only=False, patterns=list(weights_folder.FILES)
    )
    blob = (cache / f"models--owner--echo-weights/snapshots/{COMMIT}/model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(
        WeightsError, match=rf"snapshots/{COMMIT}/model.safetensors: sha256 .* differs from manifest"
    ):
        coreecho_jax.from_pretrained(REPO_ID, cache_dir=cache, local_files_only=True)


def test_api_names_are_the_package_s(folder):
    assert coreecho_jax.from_pretrained is api.from_pretrained
    assert coreecho_jax.export_weights.__module__ == "coreecho_jax.weights.export"
    with pytest.raises(AttributeError, match="module 'coreecho_jax' has no attribute 'nope'"):
        coreecho_jax.nope  # noqa: B018
