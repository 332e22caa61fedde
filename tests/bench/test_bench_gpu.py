"""bench/gpu.py: the smoke run writes every section; budget skips, out-of-memory stops and the epoch bound."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from bench import gpu
from tests.paths import REPO


def _check_row(row: dict) -> None:
    assert row["date"] and row["command"].startswith("python "), row
    if "skipped" in row:
        assert isinstance(row["skipped"], str) and row["skipped"], row
    else:
        assert math.isfinite(row["value"]) and row["value"] > 0 and row["unit"], row


@pytest.mark.slow
def test_smoke_run_writes_every_section_as_json(tmp_path):
    out = tmp_path / "x.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user has
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    meta = result["meta"]
    assert meta["device_kind"] and meta["jax_version"] and "--smoke" in meta["command"]
    assert set(result["sections"]) == set(gpu.SECTIONS)
    for name, rows in result["sections"].items():
        assert rows, f"section {name} is empty"
        for row in rows:
            _check_row(row)
    assert not [r for r in result["sections"]["train"] if "skipped" in r], result["sections"]["train"]
    train = {(r["dtype"], r["remat"]) for r in result["sections"]["train"]}
    assert train == {("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True)}
    evals = {
        (r["dtype"], r["batch_clips"], r["attention"]) for r in result["sections"]["eval"] if "value" in r
    }
    # on the CPU 'auto' is 'einsum'; the side-by-side row runs jax.nn.dot_product_attention's 'xla'
    assert evals == {("float32", 4, "einsum"), ("bfloat16", 4, "einsum"), ("bfloat16", 4, "xla")}
    assert meta["attention_auto"] == {"float32": "einsum", "bfloat16": "einsum"}
    assert "EchoNet-Dynamic epoch" in proc.stdout


def _fake_train_rate(max_fit: int):
    calls = []

    def train_rate(sizes, videos, dtype, remat):
        calls.append(videos)
        if videos > max_fit:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.9GiB.")
        clips = 2 * videos
        return {
            "value": 10.0 * clips,
            "unit": "clips/s",
            "videos": videos,
            "batch_clips": clips,
            "s_per_step": 0.1,
            "echonet_epoch_s": 1.0,
            "dtype": dtype,
            "remat": remat,
        }

    return train_rate, calls


def test_max_batch_doubles_until_out_of_memory(monkeypatch):
    train_rate, calls = _fake_train_rate(max_fit=8)
    monkeypatch.setattr(gpu, "train_rate", train_rate)
    sizes = gpu.dataclasses.replace(gpu.SMOKE, train_videos=2, max_videos=64)
    report = gpu.Report("python bench/gpu.py")
    gpu._max_batch(sizes, gpu.Budget(600), report, "8x32x32")
    assert calls == [2, 4, 8, 16]
    rows = report.section("train_max_batch")
    assert [r.get("videos") for r in rows[:3]] == [2, 4, 8]
    assert rows[3]["skipped"].startswith("out of memory")
    assert rows[-1]["videos"] == 8 and "out of memory" in rows[-1]["note"]


def test_max_batch_starts_from_the_measured_paper_batch(monkeypatch):
    train_rate, calls = _fake_train_rate(max_fit=100)
    monkeypatch.setattr(gpu, "train_rate", train_rate)
    sizes = gpu.dataclasses.replace(gpu.SMOKE, train_videos=2, max_videos=4)
    report = gpu.Report("python bench/gpu.py")
    report.add("train", "paper", **train_rate(sizes, 2, "bfloat16", False), elapsed_s=0.0)
    gpu._max_batch(sizes, gpu.Budget(600), report, "8x32x32")
    assert calls == [2, 4]  # 2 was the paper row, not measured again
    assert "--max-videos 4" in report.section("train_max_batch")[-1]["note"]


def test_item_over_budget_is_skipped_with_reason_and_not_run():
    report = gpu.Report("python bench/gpu.py")
    called = []
    row = gpu.run_item(report, gpu.Budget(1.0), "rnc", "x", 30.0, lambda: called.append(1))
    assert not called and "--budget-s" in row["skipped"]
    _check_row(row)


def test_failure_becomes_a_skip_row():
    report = gpu.Report("python bench/gpu.py")

    def boom():
        raise ValueError("bad shape")

    row = gpu.run_item(report, gpu.Budget(60.0), "eval", "x", 0.0, boom)
    assert row["skipped"] == "failed: ValueError: bad shape"


@pytest.mark.parametrize(("input_rate", "bound"), [(1000.0, "training"), (10.0, "input")])
def test_epoch_is_the_slower_of_training_and_input(input_rate, bound):
    report = gpu.Report("python bench/gpu.py")
    videos = gpu.bench_train.ECHONET_TRAIN_VIDEOS
    report.add(
        "train",
        "a",
        value=64.0,
        videos=16,
        batch_clips=32,
        echonet_epoch_s=233.0,
        dtype="bfloat16",
        remat=False,
    )
    report.add(
        "train",
        "b",
        value=32.0,
        videos=16,
        batch_clips=32,
        echonet_epoch_s=466.0,
        dtype="float32",
        remat=False,
    )
    report.add("input", "tf.data", value=input_rate, host_cores=16)
    gpu._epoch(report)
    rows = report.section("epoch")
    input_s = (videos // 16) * 32 / input_rate
    assert rows[0]["value"] == 233.0 and "bfloat16" in rows[0]["item"]
    assert rows[1]["value"] == pytest.approx(input_s)
    assert rows[2]["value"] == pytest.approx(max(233.0, input_s)) and rows[2]["note"] == f"bounded by {bound}"
