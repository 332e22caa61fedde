"""The weights folder: export from a run, the official ``best.pth`` and the Kinetics-400 ``.pth``; the
files, the manifest, the model card; loading it back bit for bit; a changed file named; the command.

A tiny fake run workdir (``config.json``, a best checkpoint of a randomly initialised tiny model, a
``calibration.json`` fitted for its weights and a ``results.json``) stands in for a trained run, as in
``tests/inference/test_predict.py``.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import stat
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file

import coreecho_jax
import coreecho_jax.analysis.runs  # registers the transfer-fold loader, as a Grad-CAM process has it
from coreecho_jax import cli, predict
from coreecho_jax.checkpoints import torch_import
from coreecho_jax.checkpoints.manager import RunCheckpoints, model_state_dict
from coreecho_jax.errors import CheckpointError, ConfigError
from coreecho_jax.evaluation import conformal, multiclip
from coreecho_jax.evaluation import steps as eval_steps
from coreecho_jax.evaluation.evaluator import model_fingerprint
from coreecho_jax.evaluation.results import format_results, write_json
from coreecho_jax.inference import runs, weights_folder
from coreecho_jax.inference.weights_folder import WeightsError
from coreecho_jax.models.coreecho import build_model
from tests.data.test_video_io import echo_like
from tests.inference.test_predict import tiny_config
from tests.paths import FIXTURES, REPO

PTH = FIXTURES / "checkpoints"
RESULTS_DATE = datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC)


def make_run(root):
    """A run workdir of the tiny model (seed 0): config.json, checkpoints/stage2/best, calibration.json
    fitted for its weights at K = 3, results.json dated :data:`RESULTS_DATE`."""
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(tiny_config().to_json_best_effort(indent=2))
    model = build_model(tiny_config().model, seed=0)
    ckpts = RunCheckpoints(run / "checkpoints" / "stage2", async_save=False)
    ckpts.save_best(1, {"model": model_state_dict(model)}, {"epoch": 0})
    ckpts.wait()
    ckpts.close()
    conformal.Calibration(
        level=0.9,
        n=(12, 12, 12),
        quantiles=(2.0, 3.0, 4.0),
        clips_per_video=3,
        weights_sha256=model_fingerprint(model),
        source="the validation split (36 videos)",
    ).save(run / "calibration.json")
    rng = np.random.default_rng(0)
    labels = rng.uniform(20, 75, 12)
    videos = multiclip.VideoPredictions(
        [f"v{i}" for i in range(12)],
        labels,
        labels[:, None] + rng.normal(0, 4, (12, 3)),
        np.zeros((12, 3), int),
    )
    write_json(multiclip.summarize(videos, n_resamples=20), run / "results.json")
    os.utime(run / "results.json", (RESULTS_DATE.timestamp(), RESULTS_DATE.timestamp()))
    return run


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def run(root):
    return make_run(root)


@pytest.fixture(scope="module")
def folder(run, root):
    return coreecho_jax.export_weights(run, root / "exported")


@pytest.fixture(scope="module")
def echo_avi(root):
    from coreecho_jax.data.video.video_io import write_video

    frames, _ = echo_like(t=40)
    return write_video(root / "echo.avi", frames, fps=50.0)


def copy_of(folder, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(folder, out)
    return out


# ----------------------------------------------------------------------------- the files


def test_a_run_exports_the_five_files_with_their_sha256_in_the_manifest(run, folder):
    assert sorted(p.name for p in folder.iterdir()) == sorted(weights_folder.FILES)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "coreecho-jax weights manifest" and manifest["algorithm"] == "sha256"
    assert sorted(manifest["files"]) == sorted(set(weights_folder.FILES) - {"manifest.json"})
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == weights_folder.file_sha256(folder / name), name
        assert entry["bytes"] == (folder / name).stat().st_size
    assert (folder / "calibration.json").read_bytes() == (run / "calibration.json").read_bytes()


def test_every_file_of_the_folder_is_as_readable_as_the_umask_allows(folder):
    umask = os.umask(0)
    os.umask(umask)
    for path in sorted(folder.iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


def test_the_safetensors_file_holds_the_run_s_state_under_flat_names(run, folder):
    trained = runs.load_run(None, run)
    expected = weights_folder.flat_state(trained.model)
    stored = load_file(str(folder / "model.safetensors"))
    assert sorted(stored) == sorted(expected)
    assert "encoder.patch_embed1.proj.kernel" in stored and any(k.startswith("head.") for k in stored)
    for name, array in expected.items():
        assert stored[name].dtype == array.dtype == np.float32, name
        np.testing.assert_array_equal(stored[name], array, err_msg=name)
    raw = (folder / "model.safetensors").read_bytes()  # safetensors: u64 header size, JSON header, bytes
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    assert header["__metadata__"] == {"format": "coreecho-jax weights", "format_version": "1"}


def test_config_json_is_the_run_config_s_subset_with_the_architecture_written_out(run, folder):
    config = json.loads((folder / "config.json").read_text())
    saved = json.loads((run / "config.json").read_text())
    assert config["format"] == "coreecho-jax weights" and config["format_version"] == 1
    assert config["has_head"] is True and config["task"] == "echonet"
    assert config["data"] == {
        k: saved["data"][k] for k in ("frames", "stride", "image_size", "channels", "pad")
    }
    assert config["eval"]["n_clips"] == 3
    model = {k: v for k, v in saved["model"].items() if k != "init_from"}
    model.update(depth=[1, 1, 1, 1], dims=[16, 32, 64, 128], head_dim=16, mlp_ratio=4.0)
    assert config["model"] == model
    assert config["preparation"]["frame_size"] == 112
    assert config["preparation"]["normalisation"]["mean"][0] == pytest.approx(0.12741163 * 255, rel=1e-6)
    assert config["weights_sha256"] == model_fingerprint(build_model(tiny_config().model, seed=0))
    assert str(run) not in json.dumps(config)  # a folder to share names no local path


def test_the_card_says_data_metrics_with_split_and_date_use_licence_and_citation(run, folder):
    text = (folder / "README.md").read_text()
    assert text.startswith("---\nlicense: other\nlibrary_name: coreecho-jax\n")
    assert "**not patients**" in text  # the tiny run is a synthetic (demo) config
    table = format_results(json.loads((run / "results.json").read_text()))
    assert (
        "The run's test split, 3 clips per video at fixed starts, as its results.json recorded them on 2026-11-30"
        in text
    )
    assert f"```\n{table}\n```" in text
    assert (
        "split-conformal intervals at 90 %, 3 clips per video, fitted on the validation split (36 videos)"
        in text
    )
    assert "Research only" in text and "**Not a medical device**" in text
    assert (
        'm = coreecho_jax.from_pretrained("path/to/this/folder")\nprint(m.predict("echo.dcm").summary)'
        in text
    )
    assert "## Limitations" in text and "@inproceedings{maani2024coreecho" in text
    assert str(run.parent) not in text


# ----------------------------------------------------------------------------- loading back


@pytest.mark.slow  # three predictions of a (tiny) model
def test_export_load_predict_is_bit_identical_to_the_run(run, folder, echo_avi):
    from_run = predict.predict_file(tiny_config(), echo_avi, run)
    from_folder = predict.predict_file(tiny_config(), echo_avi, folder)
    m = coreecho_jax.from_pretrained(folder)
    result = m.predict(echo_avi)
    for key in (
        "ef_per_clip",
        "ef_mean",
        "ef_std",
        "ef_interval",
        "interval_level",
        "summary",
        "clip_starts",
    ):
        assert from_folder[key] == from_run[key], key
    assert "ef_interval" in from_run  # the calibration came along and matches the loaded weights
    assert from_folder["calibration"] == str(folder / "calibration.json")
    assert result.to_dict() == from_folder
    assert result.ef_per_clip == tuple(from_run["ef_per_clip"]) and result.ef == from_run["ef_mean"]
    assert m.weights_sha256 == json.loads((folder / "config.json").read_text())["weights_sha256"]
    x = m.prepare(echo_avi).clips[None]
    trained = runs.load_run(None, run)
    np.testing.assert_array_equal(
        np.asarray(eval_steps.embed_step(trained.model, x))[0], m.embed(echo_avi).clip_embeddings
    )


def test_load_run_reads_a_folder_and_refuses_a_config_that_disagrees(folder):
    given = tiny_config()
    given.data.frames = 16
    with pytest.raises(ConfigError, match=r"data.frames=8 \(the given config has 16\)"):
        runs.load_run(given, folder)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "README.md", "calibration.json"])
def test_a_changed_file_is_named_in_one_line(folder, tmp_path, name):
    changed = copy_of(folder, tmp_path)
    data = bytearray((changed / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (changed / name).write_bytes(bytes(data))
    with pytest.raises(WeightsError) as info:
        coreecho_jax.from_pretrained(changed)
    message = str(info.value)
    assert message.startswith(f"{changed / name}: sha256 ") and "\n" not in message
    assert "differs from manifest.json's" in message and "export or download the folder again" in message
    with pytest.raises(WeightsError, match=f"{name}: sha256"):
        runs.load_run(None, changed)  # Grad-CAM and --mode=evaluate load it so
    with pytest.raises(WeightsError, match=f"{name}: sha256"):
        predict.predict_file(tiny_config(), changed / "no_video_read_yet.avi", changed)  # --mode=predict


def test_a_missing_listed_file_and_a_missing_manifest_are_named(folder, tmp_path):
    changed = copy_of(folder, tmp_path)
    (changed / "calibration.json").unlink()
    with pytest.raises(WeightsError, match=r"calibration.json: listed in manifest.json but missing"):
        coreecho_jax.from_pretrained(changed)
    (changed / "manifest.json").unlink()
    with pytest.raises(WeightsError, match=r"manifest.json: missing; a weights folder lists its files there"):
        coreecho_jax.from_pretrained(changed)


def test_arrays_that_do_not_fit_the_architecture_are_refused(folder, tmp_path):
    """A consistent folder (manifest rewritten) whose config names another architecture than its arrays."""
    changed = copy_of(folder, tmp_path)
    config = json.loads((changed / "config.json").read_text())
    config["model"]["dims"] = [16, 32, 64, 256]
    (changed / "config.json").write_text(json.dumps(config))
    manifest = json.loads((changed / "manifest.json").read_text())
    manifest["files"]["config.json"]["sha256"] = weights_folder.file_sha256(changed / "config.json")
    (changed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError) as info:
        coreecho_jax.from_pretrained(changed)
    message = str(info.value)
    assert message.startswith(
        f"{changed / 'model.safetensors'}: does not fit the model config.json describes"
    )
    assert "other shape or dtype (" in message and "\n" not in message
    assert "encoder.blocks4.0.attn.proj.kernel float32[128, 128] (expected float32[256, 256])" in message


# ----------------------------------------------------------------------------- PyTorch sources


@pytest.mark.slow  # compiles the imported model's forward pass
def test_the_official_best_pth_exports_with_its_licence_and_predicts_as_the_importer(root, echo_avi):
    out = coreecho_jax.export_weights(PTH / "tiny_coreecho_best.pth", root / "official", config=tiny_config())
    text = (out / "README.md").read_text()
    assert text.startswith("---\nlicense: cc-by-nc-4.0\n") and "CC BY-NC 4.0" in text
    assert "tiny_coreecho_best.pth (PyTorch checkpoint, layout coreecho, epoch 12)" in text
    assert (
        "MAE 3.90" in text
        and "calibration.json" not in json.loads((out / "manifest.json").read_text())["files"]
    )
    imported, _ = torch_import.import_pth(
        PTH / "tiny_coreecho_best.pth", head_dim=16
    )  # the fixture's head_dim
    m = coreecho_jax.from_pretrained(out)
    trained = runs.TrainedModel(imported, m.config, "imported", PTH / "tiny_coreecho_best.pth")
    prepared = m.prepare(echo_avi)
    expected = predict.predict_clips(trained, prepared)
    assert m.predict(echo_avi).ef_per_clip == tuple(expected["ef_per_clip"])
    ref = np.load(PTH / "tiny_io.npz")  # the PyTorch model's output on its own input
    x = np.transpose(ref["input"], (0, 2, 3, 4, 1))[:, None]  # NCTHW -> [B, K=1, T, H, W, C]
    out_ef = np.asarray(eval_steps.predict_step(m.trained.model, x))[:, 0]
    np.testing.assert_allclose(out_ef, ref["coreecho_pred"][:, 0], rtol=1e-5)


def test_the_kinetics_encoder_exports_without_a_head_and_refuses_to_predict(root, echo_avi):
    out = coreecho_jax.export_weights(PTH / "tiny_k400_flat.pth", root / "k400", config=tiny_config())
    config = json.loads((out / "config.json").read_text())
    assert config["has_head"] is False and config["output"] == "none: an encoder without an EF head"
    stored = load_file(str(out / "model.safetensors"))
    assert "patch_embed1.proj.kernel" in stored and not any(
        k.startswith(("head.", "encoder.")) for k in stored
    )
    text = (out / "README.md").read_text()
    assert text.startswith("---\nlicense: mit\n") and "MIT" in text and "Sense-X/UniFormer" in text
    assert "there is **no trained EF head**" in text and "`predict` refuses them" in text
    assert 'e = m.embed("echo.dcm")' in text and "m.predict(" not in text
    with pytest.raises(WeightsError) as info:
        runs.load_run(tiny_config(), out)
    assert str(info.value) == f"{out}: {runs.NO_HEAD}"
    m = coreecho_jax.from_pretrained(out)
    assert not m.has_head and repr(m) == f"EchoModel('{out}', encoder only, K=3)"
    with pytest.raises(WeightsError, match="without a trained EF regression head"):
        m.predict(echo_avi)
    with pytest.raises(WeightsError, match="without a trained EF regression head"):
        m.predict_many([echo_avi])  # at once, before any file
    encoder, _ = torch_import.import_pth(PTH / "tiny_k400_flat.pth", head_dim=16)
    clips = m.prepare(echo_avi).clips
    from flax import nnx

    expected = np.asarray(nnx.jit(lambda model, x: model(x))(encoder, clips))
    np.testing.assert_array_equal(m.embed(clips).clip_embeddings, expected)


def test_export_refusals_in_one_line(run, folder, tmp_path):
    with pytest.raises(ConfigError, match=r"best.pth: a .pth or imported folder records no clip settings"):
        coreecho_jax.export_weights(PTH / "tiny_coreecho_best.pth", tmp_path / "a")
    with pytest.raises(
        CheckpointError, match=r"nowhere: not a run workdir \(with checkpoints/\), a .pth file"
    ):
        coreecho_jax.export_weights(tmp_path / "nowhere", tmp_path / "b")
    with pytest.raises(
        WeightsError, match=r"exported: exists and is not empty; choose a new folder or pass force"
    ):
        coreecho_jax.export_weights(run, folder)


# ----------------------------------------------------------------------------- the command


def test_the_command_writes_a_folder_and_fails_in_one_line(tmp_path, capsys):
    out = tmp_path / "k400"
    argv = [
        "export-weights",
        f"--source={PTH / 'tiny_k400_flat.pth'}",
        f"--out={out}",
        f"--config={REPO / 'configs/demo.py'}:quick",
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out}:\n  model.safetensors")
    assert "an encoder without an EF head: it embeds videos but cannot predict EF" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["frames"] == 8 and config["data"]["stride"] == 4  # demo.py:quick's clips
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err == f"error: {out}: exists and is not empty; choose a new folder or pass force=True (--force)\n"
    assert cli.main([*argv, "--force"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main([*argv[:3], f"--config={REPO / 'configs/demo.py'}", "--config.data.nope=1"])
    assert capsys.readouterr().err.startswith("error: --config.data.nope: no such config field")
    with pytest.raises(SystemExit):
        cli.main(argv[:3])
    assert "records no clip settings" in capsys.readouterr().err
