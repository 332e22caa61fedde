"""Run checkpoints (latest + best): round trip, and damaged step folders fall back or fail clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from coreecho_jax.checkpoints.loading import initialize_from
from coreecho_jax.checkpoints.manager import RunCheckpoints, model_state_dict
from coreecho_jax.errors import CheckpointError

KINDS = ["latest", "best"]


def _state(step: int) -> dict:
    """A small tree whose values name the step; int keys as optax tuples give them."""
    return {"model": {"w": jnp.arange(4.0) + 10 * step, "opt": {0: jnp.full((2,), step, jnp.int32)}}}


def _save(ckpts: RunCheckpoints, kind: str, step: int) -> None:
    getattr(ckpts, f"save_{kind}")(step, _state(step), {"epoch": step - 1})
    ckpts.wait()


def _restore(ckpts: RunCheckpoints, kind: str):
    return getattr(ckpts, f"restore_{kind}")(_state(0))


def _two_steps(directory: Path, kind: str) -> Path:
    """Writes steps 1 and 2 of ``kind`` (the manager keeps one; step 1 is put back, as a run killed
    between writing a step and deleting the previous one leaves it). Returns the folder of step 2."""
    ckpts = RunCheckpoints(directory, async_save=False)
    _save(ckpts, kind, 1)
    shutil.copytree(directory / kind / "1", directory / "kept")
    _save(ckpts, kind, 2)
    ckpts.close()
    shutil.move(directory / "kept", directory / kind / "1")
    return directory / kind / "2"


def _files(step_dir: Path) -> list[Path]:
    files = [p for p in sorted(step_dir.rglob("*")) if p.is_file()]
    assert len(files) > 5  # the damage below reaches every file Orbax wrote
    return files


def _random_bytes(step_dir: Path) -> Path:
    rng = np.random.default_rng(0)
    for path in _files(step_dir):
        path.write_bytes(rng.bytes(max(path.stat().st_size, 16)))
    return step_dir


def _truncated(step_dir: Path) -> Path:
    for path in _files(step_dir):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return step_dir


def _stray_partial(step_dir: Path) -> Path:
    """A copy of a good step under a later number without its meta item (an interrupted copy)."""
    stray = step_dir.parent / "7"
    shutil.copytree(step_dir.parent / "1", stray)
    shutil.rmtree(stray / "meta")
    shutil.rmtree(step_dir)
    return stray


def _empty(step_dir: Path) -> Path:
    shutil.rmtree(step_dir)
    step_dir.mkdir()
    return step_dir


DAMAGE = {
    "random_bytes": _random_bytes,
    "truncated": _truncated,
    "stray_partial": _stray_partial,
    "empty": _empty,
}


def _assert_step(restored, step: int) -> None:
    assert restored is not None
    state, meta = restored
    assert meta == {"epoch": step - 1}
    np.testing.assert_array_equal(state["model"]["w"], _state(step)["model"]["w"])
    np.testing.assert_array_equal(state["model"]["opt"][0], [step, step])


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_and_empty_folder(tmp_path, kind):
    ckpts = RunCheckpoints(tmp_path, async_save=False)
    assert _restore(ckpts, kind) is None
    _save(ckpts, kind, 3)
    _assert_step(_restore(ckpts, kind), 3)
    ckpts.close()


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("kind", KINDS)
def test_damaged_newest_step_falls_back_with_a_warning(tmp_path, caplog, kind, damage):
    damaged = DAMAGE[damage](_two_steps(tmp_path, kind))
    ckpts = RunCheckpoints(tmp_path, async_save=False)
    with caplog.at_level("WARNING"):
        _assert_step(_restore(ckpts, kind), 1)
    assert f"skipped unreadable (damaged) checkpoint step {damaged.name} (" in caplog.text
    assert str(tmp_path / kind) in caplog.text and "restored step 1 instead" in caplog.text
    # The run goes on from step 1: saving step 2 replaces the damaged step (Orbax alone would skip a
    # save older than a stray later step without a word).
    _save(ckpts, kind, 2)
    caplog.clear()
    with caplog.at_level("WARNING"):
        _assert_step(_restore(ckpts, kind), 2)
    assert "damaged" not in caplog.text
    ckpts.close()


@pytest.mark.parametrize("kind", KINDS)
def test_all_steps_damaged_is_a_checkpoint_error_naming_the_folder(tmp_path, kind):
    _random_bytes(_two_steps(tmp_path, kind))
    _empty(tmp_path / kind / "1")
    ckpts = RunCheckpoints(tmp_path, async_save=False)
    with pytest.raises(
        CheckpointError, match=rf"{tmp_path / kind}: no readable checkpoint; found steps \[1, 2\]"
    ):
        _restore(ckpts, kind)
    ckpts.close()


def _run_workdir(root: Path, stages: dict[str, int]) -> Path:
    """A run workdir with a best checkpoint of a Linear(2, 3) per stage, each at the given step."""
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    for stage, step in stages.items():
        template = model_state_dict(model)
        state = {
            "model": {k: jnp.full(v.shape, step + 0.5 * (stage == "stage2")) for k, v in template.items()}
        }
        ckpts = RunCheckpoints(root / "checkpoints" / stage, async_save=False)
        ckpts.save_best(step, state, {"epoch": step - 1})
        ckpts.close()
    return root


def _kernel_after_loading(workdir: Path) -> float:
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(1))
    initialize_from(model, workdir)
    return float(model.kernel[...][0, 0])


def test_loading_a_run_uses_stage2_then_stage1_and_skips_damage(tmp_path, caplog):
    workdir = _run_workdir(tmp_path, {"stage1": 3, "stage2": 4})
    assert _kernel_after_loading(workdir) == 4.5
    # stage 2 killed during its first save: only Orbax's unfinished folder, so stage 1's best is used
    stage2_best = workdir / "checkpoints" / "stage2" / "best"
    shutil.move(stage2_best / "4", stage2_best / "4.orbax-checkpoint-tmp-1733100000000000")
    assert _kernel_after_loading(workdir) == 3.0
    # a damaged stray step beside a good one: the good one, with a warning
    shutil.move(stage2_best / "4.orbax-checkpoint-tmp-1733100000000000", stage2_best / "4")
    (stage2_best / "9").mkdir()
    with caplog.at_level("WARNING"):
        assert _kernel_after_loading(workdir) == 4.5
    assert "step 9" in caplog.text and "restored step 4 instead" in caplog.text


def test_loading_a_run_whose_best_is_all_damaged_names_the_folder(tmp_path):
    workdir = _run_workdir(tmp_path, {"stage1": 3, "stage2": 4})
    _random_bytes(workdir / "checkpoints" / "stage2" / "best" / "4")
    with pytest.raises(CheckpointError, match=r"stage2/best: no readable checkpoint; found steps \[4\]"):
        _kernel_after_loading(workdir)
    empty = tmp_path / "empty_run"
    (empty / "checkpoints" / "stage1").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"empty_run: a run workdir without any best checkpoint"):
        _kernel_after_loading(empty)
    assert sorted(p.name for p in (empty / "checkpoints").rglob("*")) == ["stage1"]  # loading wrote nothing
