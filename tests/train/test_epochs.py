"""The resumable epochs both trainers share (coreecho_jax.train.epochs), on their own: the latest epoch
restored, the best one chosen (ties to the later), the step cap, epochs numbered from 1 (= the
checkpoint step), checkpoints of the former numbering resumed."""

import jax.numpy as jnp
import numpy as np
import pytest

from coreecho_jax.errors import CheckpointError
from coreecho_jax.train.epochs import ResumableEpochs, steps_per_epoch


def _state(value: float) -> dict:
    """A model and an optimizer state whose arrays say which epoch wrote them."""
    return {"model": {"w": jnp.full((2, 3), value)}, "opt": {"m": jnp.full((3,), -value)}}


TEMPLATE = _state(0.0)


def _run(directory, scores, epochs, *, kill_after=None):
    """Runs ``epochs`` epochs (the state of epoch index e holds e + 1, its record says epoch e + 1, as
    the loops' records do) scored by ``scores``; stops after epoch index ``kill_after`` as a killed run
    would (the checkpoints left as they are). Returns the runner."""
    run = ResumableEpochs(directory, "stage 1", best_key="best_val_mae", meta={"stage": 1})
    restored = run.restore_latest(TEMPLATE)
    if restored is not None:
        np.testing.assert_array_equal(restored["model"]["w"], np.full((2, 3), float(run.start)))
        np.testing.assert_array_equal(restored["opt"]["m"], np.full((3,), -float(run.start)))
    for epoch in run.remaining(epochs):
        run.save(epoch, {"epoch": epoch + 1, "val": scores[epoch]}, _state(epoch + 1.0), scores[epoch])
        if epoch == kill_after:
            run.checkpoints.wait()
            return run
    return run


def test_a_killed_run_resumes_after_its_latest_epoch_and_restores_the_best(tmp_path):
    scores = [3.0, 1.0, 2.0, 1.0]
    killed = _run(tmp_path, scores, 4, kill_after=1)
    assert killed.best == 1.0 and [r["epoch"] for r in killed.history] == [1, 2]
    resumed = ResumableEpochs(tmp_path, "stage 1", best_key="best_val_mae", meta={"stage": 1})
    assert resumed.restore_latest(TEMPLATE) is not None
    assert (resumed.start, resumed.best) == (2, 1.0)
    assert resumed.history == [{"epoch": 1, "val": 3.0}, {"epoch": 2, "val": 1.0}]
    # epochs 3 (2.0: worse) and 4 (1.0: a tie, which goes to the later epoch)
    assert [resumed.save(e, {"epoch": e + 1}, _state(e + 1.0), scores[e]) for e in resumed.remaining(4)] == [
        False,
        True,
    ]
    state, number = resumed.finish({"model": TEMPLATE["model"]})
    assert number == 4
    np.testing.assert_array_equal(state["model"]["w"], np.full((2, 3), 4.0))
    # everything ran: a rerun restores the end and has nothing left to do
    again = ResumableEpochs(tmp_path, "stage 1", best_key="best_val_mae", meta={"stage": 1})
    again.restore_latest(TEMPLATE)
    assert list(again.remaining(4)) == [] and len(again.history) == 4
    again.finish(None)


def test_the_checkpoint_meta_holds_the_extra_fields_the_epoch_and_the_best_score(tmp_path):
    run = _run(tmp_path, [2.0, float("nan")], 2)
    run.finish(None)
    from coreecho_jax.checkpoints.manager import RunCheckpoints

    ckpts = RunCheckpoints(tmp_path, read_only=True)
    try:
        _, latest = ckpts.restore_latest(TEMPLATE)
        _, best = ckpts.restore_best({"model": TEMPLATE["model"]})
    finally:
        ckpts.close()
    assert latest == {
        "stage": 1,
        "epoch": 2,  # the epoch's number = its step
        "best_val_mae": 2.0,
        "history": [{"epoch": 1, "val": 2.0}, {"epoch": 2, "val": None}],  # NaN is not a best, and null
    }
    assert best["epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "latest").iterdir()) == ["2"]
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["1"]


def test_checkpoints_of_the_former_numbering_resume_where_they_stopped(tmp_path):
    """Checkpoints written when metas and records counted epochs from 0 (step n held "epoch": n - 1): a
    run resumes after its last epoch, and reads their numbers as today's."""
    from coreecho_jax.checkpoints.manager import RunCheckpoints

    old = RunCheckpoints(tmp_path, async_save=False)
    history = [{"stage": 1, "epoch": 0, "val": 3.0}, {"stage": 1, "epoch": 1, "val": 1.0}]
    old.save_best(
        2, {"model": _state(2.0)["model"]}, {"stage": 1, "epoch": 1, "best_val_mae": 1.0, "history": history}
    )
    old.save_latest(2, _state(2.0), {"stage": 1, "epoch": 1, "best_val_mae": 1.0, "history": history})
    old.close()
    resumed = ResumableEpochs(tmp_path, "stage 1", best_key="best_val_mae", meta={"stage": 1})
    assert resumed.restore_latest(TEMPLATE) is not None
    assert (resumed.start, list(resumed.remaining(3))) == (2, [2])  # epoch 3 (index 2) is what is left
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    resumed.save(2, {"stage": 1, "epoch": 3, "val": 2.0}, _state(3.0), 2.0)
    state, number = resumed.finish({"model": TEMPLATE["model"]})
    assert number == 2  # the old best checkpoint, epoch 2 in today's numbering
    np.testing.assert_array_equal(state["model"]["w"], np.full((2, 3), 2.0))
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]


def test_epochs_without_a_score_are_never_best(tmp_path):
    run = ResumableEpochs(tmp_path, "fold 3", best_key="best_val")
    assert run.restore_latest(TEMPLATE) is None and run.start == 0
    for epoch in run.remaining(2):
        assert run.save(epoch, {"epoch": epoch + 1, "loss": 0.5}, _state(epoch + 1.0)) is False
    assert run.best == float("inf")
    with pytest.raises(CheckpointError, match=r"^fold 3 finished without a best checkpoint in .*"):
        run.finish({"model": TEMPLATE["model"]})
    assert ResumableEpochs(tmp_path, "fold 3", best_key="best_val").finish(None) is None


def test_steps_per_epoch_are_the_full_batches_at_most_the_cap():
    assert steps_per_epoch(7, 0) == 7  # 0: no cap
    assert steps_per_epoch(7, 3) == 3
    assert steps_per_epoch(2, 5) == 2
