"""Run checkpoints of the tiny CoReEcho model damaged inside their array data fall back to the newest
readable step (or end in one ``CheckpointError`` line); a readable checkpoint of another architecture
(an Orbax run or a ``.pth``) is its own error, naming what it holds and the setting that selects it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import demo
from coreecho_jax.checkpoints import architecture
from coreecho_jax.checkpoints.architecture import ArchitectureMismatchError
from coreecho_jax.checkpoints.key_map import KeyMapError
from coreecho_jax.checkpoints.loading import initialize_from
from coreecho_jax.checkpoints.manager import RunCheckpoints, model_state_dict, quiet_abandoned_reads
from coreecho_jax.errors import CheckpointError
from coreecho_jax.inference.runs import load_run
from coreecho_jax.models.coreecho import CoReEcho
from coreecho_jax.models.rngs import make_rngs
from coreecho_jax.models.uniformer import uniformer_config
from tests.checkpoints.test_torch_pth import _dict_pkl, _keys_json, _tensor_ops, _write_zip
from tests.conftest import run_python
from tests.paths import FIXTURES

KINDS = ["latest", "best"]
TINY = "UniFormer (preset 'tiny': depth [1, 1, 1, 1], dims [16, 32, 64, 128])"
SMALL = "UniFormer-S (preset 'small': depth [3, 4, 8, 3], dims [64, 128, 320, 512])"


def _abstract(preset: str) -> CoReEcho:
    """A CoReEcho with shape-only leaves (no initialisation: cheap even for UniFormer-S)."""
    return nnx.eval_shape(
        lambda: CoReEcho(uniformer_config(preset), head_dropout=0.4, head_bias_init=55.6, rngs=make_rngs(0))
    )


@pytest.fixture(scope="module")
def template() -> dict:
    """A best checkpoint's template as the loops pass it: jax arrays (placed on a device, so Orbax reads
    them through its array handler, as for a real model; not numpy)."""
    shapes = {"model": model_state_dict(_abstract("tiny"))}
    return jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shapes)


def _state(template: dict, step: int) -> dict:
    """Random weights (incompressible, so each big array lands in OCDBT data files) that name the step."""
    rng = np.random.default_rng(step)
    return jax.tree.map(lambda leaf: rng.standard_normal(leaf.shape).astype(leaf.dtype), template)


def _leaf(state: dict) -> np.ndarray:
    return np.asarray(state["model"]["encoder"]["blocks3"][0]["attn"]["qkv"]["kernel"])


def _two_steps(directory: Path, kind: str, template: dict) -> Path:
    """Steps 1 and 2 of ``kind`` (the manager keeps one; step 1 is put back, as a run killed between
    writing a step and deleting the previous one leaves it). Returns the folder of step 2."""
    ckpts = RunCheckpoints(directory, async_save=False)
    getattr(ckpts, f"save_{kind}")(1, _state(template, 1), {"epoch": 0})
    shutil.copytree(directory / kind / "1", directory / "kept")
    getattr(ckpts, f"save_{kind}")(2, _state(template, 2), {"epoch": 1})
    ckpts.close()
    shutil.move(directory / "kept", directory / kind / "1")
    return directory / kind / "2"


def _data_files(step_dir: Path) -> list[Path]:
    """The OCDBT files that hold the array chunks (the metadata, manifests and b-tree stay intact)."""
    files = sorted(
        p for p in (step_dir / "state" / "ocdbt.process_0" / "d").iterdir() if p.stat().st_size > 64_000
    )
    assert files  # the tiny model's arrays, about 1.3 MB, are in data files of their own
    return files


def _random_array_data(step_dir: Path) -> int:
    rng = np.random.default_rng(0)
    for path in _data_files(step_dir):
        path.write_bytes(rng.bytes(path.stat().st_size))
    return int(step_dir.name)


def _deleted_data_file(step_dir: Path) -> int:
    max(_data_files(step_dir), key=lambda p: p.stat().st_size).unlink()
    return int(step_dir.name)


def _stray_without_data(step_dir: Path) -> int:
    """A copy of step 1 under a newer number without its array data (an interrupted copy)."""
    stray = step_dir.parent / "7"
    shutil.copytree(step_dir.parent / "1", stray)
    shutil.rmtree(stray / "state" / "ocdbt.process_0")
    return 7


# damage -> (the step the restore falls back to, what the warning says about the damaged step)
DAMAGE = {
    "random_array_data": (_random_array_data, 1, "ZSTD_decompressStream() failed"),
    "deleted_data_file": (_deleted_data_file, 1, "Truncated Zstd-compressed stream"),
    "stray_without_data": (_stray_without_data, 2, "Truncated Zstd-compressed stream"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("kind", KINDS)
def test_damaged_array_data_falls_back_to_the_newest_readable_step(tmp_path, caplog, template, kind, damage):
    damage_fn, fallback, why = DAMAGE[damage]
    damaged = damage_fn(_two_steps(tmp_path, kind, template))
    ckpts = RunCheckpoints(tmp_path, async_save=False)
    with caplog.at_level("WARNING"):
        state, meta = getattr(ckpts, f"restore_{kind}")(template)
    assert meta == {"epoch": fallback - 1}
    np.testing.assert_array_equal(_leaf(state), _leaf(_state(template, fallback)))
    (warning,) = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert warning.startswith(f"{tmp_path / kind}: skipped unreadable (damaged) checkpoint step {damaged} (")
    # TensorStore reads the arrays concurrently: which unreadable array it names first varies
    assert 'FAILED_PRECONDITION: Error reading "model.' in warning and why in warning
    assert warning.endswith(f"restored step {fallback} instead")
    # the run goes on from there: the next save replaces the damaged step
    getattr(ckpts, f"save_{kind}")(fallback + 1, _state(template, 5), {"epoch": 4})
    caplog.clear()
    with caplog.at_level("WARNING"):
        state, meta = getattr(ckpts, f"restore_{kind}")(template)
    assert meta == {"epoch": 4} and "damaged" not in caplog.text
    np.testing.assert_array_equal(_leaf(state), _leaf(_state(template, 5)))
    ckpts.close()


def test_every_step_damaged_is_one_checkpoint_error_line(tmp_path, template):
    _random_array_data(_two_steps(tmp_path, "best", template))
    _deleted_data_file(tmp_path / "best" / "1")
    ckpts = RunCheckpoints(tmp_path, read_only=True)
    with pytest.raises(CheckpointError) as info:
        ckpts.restore_best(template)
    message = str(info.value)
    assert "\n" not in message and info.value.__context__ is None and info.value.__cause__ is None
    assert message.startswith(f"{tmp_path / 'best'}: no readable checkpoint; found steps [1, 2], none could")
    assert (
        "step 2 (ValueError: FAILED_PRECONDITION" in message and "ZSTD_decompressStream() failed" in message
    )
    assert "step 1 (ValueError: FAILED_PRECONDITION" in message and "Truncated Zstd-compressed" in message
    assert not isinstance(info.value, KeyMapError)


def test_a_fresh_interpreter_prints_only_the_warning(tmp_path, template):
    """What a user sees: the warning, then the restored step; no traceback of the abandoned reads."""
    _random_array_data(_two_steps(tmp_path, "latest", template))
    (tmp_path / "template.json").write_text(json.dumps(jax.tree.map(lambda x: list(x.shape), template)))
    code = f"""
import json
import jax, jax.numpy as jnp
from coreecho_jax.checkpoints.manager import RunCheckpoints
shapes = json.load(open({str(tmp_path / "template.json")!r}))
template = jax.tree.map(lambda s: jnp.zeros(s, jnp.float32), shapes, is_leaf=lambda x: isinstance(x, list))
state, meta = RunCheckpoints({str(tmp_path)!r}, read_only=True).restore_latest(template)
print("restored epoch", meta["epoch"])
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "restored epoch 0"
    assert "skipped unreadable (damaged) checkpoint step 2" in done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


@pytest.mark.slow  # builds the tiny model: ~10 s on a busy machine
def test_predict_loads_the_last_readable_best_step_of_a_damaged_run(tmp_path, caplog, template):
    """The caller path of predict / embed / Grad-CAM: ``load_run`` of a run workdir."""
    (tmp_path / "config.json").write_text(demo.get_config().to_json_best_effort(indent=2))
    stage = tmp_path / "checkpoints" / "stage2"
    _random_array_data(_two_steps(stage, "best", template))
    with caplog.at_level("WARNING"):
        trained = load_run(demo.get_config(), tmp_path)
    model, origin = trained.model, trained.origin
    assert origin == f"{stage}/best (epoch 0)"
    np.testing.assert_array_equal(model.encoder.blocks3[0].attn.qkv.kernel[...], _leaf(_state(template, 1)))
    assert f"{stage / 'best'}: skipped unreadable (damaged) checkpoint step 2 (ValueError: " in caplog.text


def test_leftovers_of_abandoned_reads_are_filtered_from_the_unraisable_hook(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    quiet_abandoned_reads()
    quiet_abandoned_reads()  # installed once

    async def _read_array_index_and_device_put():  # the name of Orbax's reading coroutine
        pass

    leftover = _read_array_index_and_device_put()
    other = RuntimeError("something else")
    for exc, obj in (
        (RuntimeError("Event loop is closed"), None),
        (Exception("read"), leftover),
        (other, None),
    ):
        sys.unraisablehook(SimpleNamespace(exc_type=type(exc), exc_value=exc, exc_traceback=None, object=obj))
    leftover.close()
    assert [u.exc_value for u in seen] == [other]


# ----------------------------------------------------------------------------------------------------------
# A readable checkpoint of another architecture.
# ----------------------------------------------------------------------------------------------------------


def _run_workdir(root: Path, template: dict) -> Path:
    ckpts = RunCheckpoints(root / "checkpoints" / "stage2", async_save=False)
    ckpts.save_best(3, _state(template, 3), {"epoch": 2})
    ckpts.close()
    return root


def test_a_run_of_another_preset_is_named_with_its_setting_not_called_damaged(tmp_path, template):
    workdir = _run_workdir(tmp_path, template)
    with pytest.raises(ArchitectureMismatchError) as info:
        initialize_from(_abstract("small"), workdir)
    best = workdir / "checkpoints" / "stage2" / "best"
    assert str(info.value) == (
        f"{best}: step 3 holds a model of architecture {TINY}, but the config builds {SMALL}. The checkpoint "
        "is readable, not damaged: to use it, select its architecture with --config.model.preset=tiny"
    )
    assert (best / "3").is_dir()


def test_a_run_of_another_tree_is_a_key_map_error_without_deletion_advice(tmp_path):
    ckpts = RunCheckpoints(tmp_path, async_save=False)
    ckpts.save_latest(2, {"model": {"w": np.arange(4.0), "b": np.zeros(3)}}, {"epoch": 1})
    with pytest.raises(KeyMapError) as info:
        ckpts.restore_latest({"model": {"w": np.zeros(5), "c": np.zeros(3)}})
    message = str(info.value)
    assert message.startswith(
        f"{tmp_path / 'latest'}: step 2 is readable but does not fit the model: missing arrays (1): model.c; "
        "unexpected arrays (1): model.b; arrays of another shape (1): model.w (4,) (expected (5,)). "
    )
    assert "delete" not in message and "\n" not in message
    assert not isinstance(info.value, ArchitectureMismatchError)
    ckpts.close()


def test_a_damaged_newer_step_before_another_architecture_is_named_too(tmp_path, template):
    workdir = _run_workdir(tmp_path, template)
    best = workdir / "checkpoints" / "stage2" / "best"
    shutil.copytree(best / "3", best / "4")
    (best / "4" / "state" / "_METADATA").write_text("{not json")  # step 4's shapes cannot be read
    with pytest.raises(ArchitectureMismatchError) as info:
        initialize_from(_abstract("small"), workdir)
    message = str(info.value)
    assert message.startswith(f"{best}: step 3 holds a model of architecture {TINY}, but the config")
    assert message.endswith(
        "(newer steps, damaged: step 4 (JSONDecodeError: Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1)))"
    )


def _uniformer_s_pth(path: Path) -> Path:
    """A Kinetics-400 UniFormer-S ``.pth`` with the real key set and shapes (331 keys, 21.4 M values),
    in a few hundred kB: every tensor reads one storage element with stride 0."""
    keys = json.loads((FIXTURES / "uniformer" / "uniformer_small_keys.json").read_text())
    keys.update({"head.weight": [400, 512], "head.bias": [400]})  # the K400 classifier
    entries = {}
    for key, size in keys.items():
        storage, store_key = (
            ("LongStorage", "1") if key.endswith("num_batches_tracked") else ("FloatStorage", "0")
        )
        entries[key] = _tensor_ops(storage, store_key, 1, 0, tuple(size), (0,) * len(size))
    storages = {"0": np.float32(0.5).tobytes(), "1": np.int64(3).tobytes()}
    return _write_zip(path, _dict_pkl(entries), storages)


@pytest.mark.parametrize(
    "name, preset, holds, found",
    [
        ("tiny_k400_flat.pth", "small", "a Kinetics-400 UniFormer (encoder and 400-class classifier)", TINY),
        ("tiny_coreecho_best.pth", "small", "a CoReEcho checkpoint (encoder and EF regression head)", TINY),
        (
            "uniformer_small_k400.pth",
            "tiny",
            "a Kinetics-400 UniFormer (encoder and 400-class classifier)",
            SMALL,
        ),
    ],
)
def test_a_pth_of_another_architecture_is_one_line_naming_file_architecture_and_setting(
    tmp_path, name, preset, holds, found
):
    path = FIXTURES / "checkpoints" / name
    if name == "uniformer_small_k400.pth":
        path = _uniformer_s_pth(tmp_path / name)
    model = _abstract(preset)
    with pytest.raises(ArchitectureMismatchError) as info:
        initialize_from(model, path)
    expected = SMALL if preset == "small" else TINY
    wanted_preset = "tiny" if preset == "small" else "small"
    assert str(info.value) == (
        f"{path} holds {holds}, architecture {found}, but the config builds {expected}. The checkpoint is "
        f"readable, not damaged: to use it, select its architecture with --config.model.preset={wanted_preset}"
    )
    assert isinstance(info.value, CheckpointError)


def test_a_pth_that_misfits_its_own_architecture_names_the_file_in_one_line(tmp_path):
    """Same architecture, missing keys: the key map's problems, in one line after the file name."""
    keys = {k: s for k, s, _ in _keys_json()["tiny_k400_flat.pth"] if not k.startswith("blocks4.")}
    entries = {k: _tensor_ops("FloatStorage", "0", 1, 0, tuple(s), (0,) * len(s)) for k, s in keys.items()}
    path = _write_zip(tmp_path / "partial.pth", _dict_pkl(entries), {"0": np.float32(1).tobytes()})
    with pytest.raises(KeyMapError) as info:
        initialize_from(_abstract("tiny"), path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: UniFormer state does not fit UniFormer: missing keys (")
    assert "... and" in message  # long lists are cut: the count says how many


def test_architecture_of_the_real_uniformer_s_key_set():
    keys = json.loads((FIXTURES / "uniformer" / "uniformer_small_keys.json").read_text())
    cfg = architecture.from_torch_shapes(keys)
    assert architecture.describe(cfg) == SMALL
    assert architecture.setting(cfg) == "--config.model.preset=small"
    odd = architecture.from_torch_shapes({k: s for k, s in keys.items() if not k.startswith("blocks3.7.")})
    assert (
        architecture.describe(odd)
        == "a UniFormer of no preset (depth [3, 4, 7, 3], dims [64, 128, 320, 512])"
    )
    assert architecture.setting(odd) == (
        "c.model.depth = (3, 4, 7, 3) and c.model.dims = (64, 128, 320, 512) in the config file "
        "(no preset has this architecture)"
    )
    assert architecture.from_torch_shapes({"w": (3,)}) is None
