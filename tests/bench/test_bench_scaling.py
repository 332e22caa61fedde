"""bench/batch_scaling.py: the sweep's order, ratios, failed points, table, plot and argument checks."""

from __future__ import annotations

import json

import pytest

from bench import batch_scaling as bs


def fake_runner(calls: list, fail: set = frozenset()):
    """bench_model's worker stand-in: ours costs 0.3 s/clip (forward) or 1.5 (train) plus 0.1 s per
    step; the official model 0.5 / 2.0 s/clip. Raises RuntimeError for (impl, phase, batch) in ``fail``."""

    def run(args, impl, phase):
        calls.append((impl, phase, args.batch))
        if (impl, phase, args.batch) in fail:
            raise RuntimeError(f"worker {impl}/{phase} failed:\nTraceback ...\nMemoryError: out of memory")
        per_clip = {("shifted", "forward"): 0.3, ("shifted", "train"): 1.5}.get((impl, phase))
        per_clip = per_clip or {"forward": 0.5, "train": 2.0}[phase]
        row = dict(
            impl=impl, phase=phase, batch=args.batch, step_s=0.1 + per_clip * args.batch, peak_rss_gib=1.0
        )
        if impl != bs.OFFICIAL:
            row["compile_s"] = 3.0
        return row

    return run


def args_for(argv):
    return bs.parse_args(argv)


def test_sweep_runs_every_point_in_order_and_computes_ratios():
    calls = []
    args = args_for(["--forward-batches", "1", "2", "--train-batches", "2"])
    args.official_repo = "/official"  # skip the availability check: the runner is a fake
    rows = bs.with_ratios(bs.sweep(args, fake_runner(calls)))
    assert calls == [
        ("shifted", "forward", 1),
        ("official", "forward", 1),
        ("shifted", "forward", 2),
        ("official", "forward", 2),
        ("shifted", "train", 2),
        ("official", "train", 2),
    ]
    ours = {(r["phase"], r["batch"]): r for r in rows if r["impl"] == "shifted"}
    assert ours[("forward", 1)]["s_clip"] == pytest.approx(0.4)
    assert ours[("forward", 1)]["official_over_ours"] == pytest.approx(0.6 / 0.4)
    assert ours[("forward", 2)]["official_over_ours"] == pytest.approx(0.55 / 0.35)
    assert ours[("train", 2)]["official_over_ours"] == pytest.approx(2.05 / 1.55)
    assert all("official_over_ours" not in r for r in rows if r["impl"] == bs.OFFICIAL)


def test_rounds_alternate_sides_keep_the_fastest_and_give_every_round_ratio():
    calls, times = [], iter([0.9, 1.6, 0.7, 1.2, 0.8, 1.5])  # ours, official, ours, official, ...

    def runner(args, impl, phase):
        calls.append(impl)
        return dict(impl=impl, phase=phase, batch=args.batch, step_s=next(times), peak_rss_gib=1.0)

    args = args_for(["--forward-batches", "1", "--train-batches", "--rounds", "3"])
    args.official_repo = "/official"
    ours, theirs = bs.with_ratios(bs.sweep(args, runner))
    assert calls == ["shifted", "official"] * 3
    assert ours["step_s"] == 0.7 and ours["rounds_s"] == [0.9, 0.7, 0.8]
    assert theirs["step_s"] == 1.2 and theirs["rounds_s"] == [1.6, 1.2, 1.5]
    assert ours["official_over_ours"] == pytest.approx(1.2 / 0.7)
    assert ours["round_ratios"] == pytest.approx([1.6 / 0.9, 1.2 / 0.7, 1.5 / 0.8])
    assert bs.format_table([ours, theirs])[2].endswith("1.71x  1.78x 1.71x 1.88x")


def test_without_official_only_ours_runs_and_no_ratio():
    calls = []
    rows = bs.with_ratios(
        bs.sweep(args_for(["--forward-batches", "4", "--train-batches"]), fake_runner(calls))
    )
    assert calls == [("shifted", "forward", 4)]
    assert "official_over_ours" not in rows[0]
    table = bs.format_table(rows)
    assert table[2].split()[:3] == ["forward", "shifted", "4"] and table[2].rstrip().endswith("-")


def test_a_failed_point_is_kept_and_the_sweep_goes_on(tmp_path):
    calls = []
    args = args_for(["--forward-batches", "1", "--train-batches", "2", "4"])
    args.official_repo = "/official"
    args.rounds = 2
    rows = bs.with_ratios(bs.sweep(args, fake_runner(calls, fail={("shifted", "train", 4)})))
    # the failure did not stop the sweep; only the failed side's later round is skipped
    assert len(calls) == 11 and calls.count(("shifted", "train", 4)) == 1
    failed = [r for r in rows if "failed" in r]
    assert [(r["impl"], r["phase"], r["batch"]) for r in failed] == [("shifted", "train", 4)]
    assert "out of memory" in failed[0]["failed"]
    lines = bs.format_table(rows)
    assert any("failed: MemoryError: out of memory" in line for line in lines)
    # the official point at batch 4 has no ours to compare with: no ratio, no crash
    png = tmp_path / "scaling.png"
    bs.plot(rows, png, "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    json.dumps(rows)  # rows are what --out writes


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--forward-batches", "0"], "must be >= 1"),
        (["--steps", "0"], "must be >= 1"),
        (["--rounds", "0"], "must be >= 1"),
        (["--official-repo", "/nonexistent/coreecho"], "nonexistent"),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit):
        bs.parse_args(argv)
    assert message in capsys.readouterr().err


def test_official_needs_even_train_batches(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bs.official, "check_available", lambda path: tmp_path)
    with pytest.raises(SystemExit):
        bs.parse_args(["--official-repo", str(tmp_path), "--train-batches", "2", "3"])
    err = capsys.readouterr().err
    assert "even --train-batches" in err and "[3]" in err
