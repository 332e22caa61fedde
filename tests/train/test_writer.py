"""metrics.jsonl and TensorBoard event files, written without TensorFlow and read back by TensorBoard."""

import json

from tensorboard.backend.event_processing import event_accumulator

from coreecho_jax.train.writer import MetricWriter


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_reads_back_every_scalar(tmp_path):
    writer = MetricWriter(tmp_path)
    writer.write(1, {"train/loss": 2.5, "train/l1": 10.0}, stage=1, epoch=0)
    writer.write(2, {"train/loss": 1.25}, stage=1, epoch=0)
    writer.flush()
    assert _scalars(tmp_path / "tensorboard") == {
        "train/loss": [(1, 2.5), (2, 1.25)],
        "train/l1": [(1, 10.0)],
    }
    writer.close()


def test_jsonl_holds_context_and_non_finite_values_as_text(tmp_path):
    writer = MetricWriter(tmp_path, tensorboard=False)
    writer.write(3, {"loss": float("nan"), "mae": 4.0}, stage=2, epoch=1)
    writer.close()
    (record,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert record == {"step": 3, "stage": 2, "epoch": 1, "loss": "nan", "mae": 4.0}
    assert not (tmp_path / "tensorboard").exists()


def test_two_writers_of_one_process_keep_separate_files(tmp_path):
    first, second = MetricWriter(tmp_path), MetricWriter(tmp_path)
    first.write(1, {"a": 1.0})
    second.write(2, {"b": 2.0})
    first.close()
    second.close()
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert _scalars(tmp_path / "tensorboard") == {"a": [(1, 1.0)], "b": [(2, 2.0)]}
