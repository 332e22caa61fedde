"""bench/official.py, bench_model.py, bench_rnc.py: the official PyTorch numbers are measured in the run
(``--official-repo``) or said to be missing; no constant baseline; clear errors without PyTorch or
without the official checkout. None of these tests needs PyTorch."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from bench import bench_model, bench_rnc, official
from coreecho_jax.errors import ConfigError

FLOPS = {"forward": 40e9, "train": 120e9}


def _fake_checkout(root, files=official.OFFICIAL_FILES):
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


def _no_torch(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a)
    )


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(official.OfficialUnavailable, match=f"--official-repo {tmp_path}/nope: no such"):
        official.check_repo(tmp_path / "nope")


def test_missing_official_files_are_named(tmp_path):
    _fake_checkout(tmp_path, ["coreecho/__init__.py", "coreecho/uniformer.py"])
    with pytest.raises(official.OfficialUnavailable) as err:
        official.check_repo(tmp_path)
    message = str(err.value)
    assert f"--official-repo {tmp_path}: no coreecho/regressor.py, coreecho/loss.py there" in message
    assert "uniformer.py" not in message.split("there")[0].split("no ")[1]
    assert isinstance(err.value, ConfigError) and isinstance(err.value, ValueError)


def test_complete_checkout_passes(tmp_path):
    assert official.check_repo(_fake_checkout(tmp_path)) == tmp_path.resolve()


def test_missing_torch_says_how_to_install(tmp_path, monkeypatch):
    _fake_checkout(tmp_path)
    _no_torch(monkeypatch)
    expected = "PyTorch is not installed: pip install torch==2.13.0"
    with pytest.raises(official.OfficialUnavailable, match=expected):
        official.check_available(tmp_path)
    with pytest.raises(official.OfficialUnavailable, match=expected):
        official.load_official(tmp_path)
    with pytest.raises(official.OfficialUnavailable, match=expected):
        official.rnc_timer(tmp_path, np.zeros((4, 3), np.float32), np.zeros((4, 1), np.float32), 1)


def test_official_train_step_needs_two_views(tmp_path):
    with pytest.raises(ConfigError, match="batch 3 clips; it needs an even number"):
        official.train_step_timer(tmp_path, np.zeros((3, 2, 4, 4, 3), np.float32), np.zeros(3), 1)


def test_paired_views_is_the_official_layout():
    rng = np.random.default_rng(0)
    flat = rng.normal(size=(6, 5)).astype(np.float32)
    labels = np.array([10, 20, 30, 10, 20, 30], np.float32)
    paired, y = official.paired_views(flat, labels)
    assert paired.shape == (3, 2, 5) and y.shape == (3, 1)
    np.testing.assert_array_equal(np.concatenate([paired[:, 0], paired[:, 1]]), flat)
    np.testing.assert_array_equal(np.tile(y, (2, 1))[:, 0], labels)
    with pytest.raises(ConfigError, match="2N = 5 rows"):
        official.paired_views(flat[:5], labels[:5])


@pytest.mark.parametrize(
    "script, args", [(bench_model, ["--phases", "forward"]), (bench_rnc, ["--sizes", "32"])]
)
def test_scripts_stop_before_timing_without_the_checkout(script, args, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        script.main(["--official-repo", str(tmp_path), *args])
    assert stop.value.code == 2
    assert f"--official-repo {tmp_path}: no coreecho/__init__.py" in capsys.readouterr().err


def test_no_constant_baseline_is_left():
    for script in (bench_model, bench_rnc):
        assert not [name for name in vars(script) if name.startswith("TORCH_BASELINE")]


def _model_row(impl, phase, step_s, **extra):
    row = dict(impl=impl, phase=phase, step_s=step_s, cpu_s=2 * step_s, peak_rss_gib=1.0)
    if impl != official.OFFICIAL:
        row.update(compile_s=5.0, matmul_gflops=100.0)
    return {**row, **extra}


def test_model_table_without_official_says_not_measured():
    rows = [_model_row("shifted", "forward", 0.4), _model_row("shifted", "train", 2.0)]
    lines = bench_model.format_table(rows, FLOPS, batch=2, cores=2)
    assert len(lines) == 4 and "official s/clip" in lines[0]
    for line in lines[2:]:
        assert "not measured (pass --official-repo)" in line
        assert "x " not in line  # no ratio without a measurement


def test_model_table_prints_official_ours_and_ratio():
    rows = [
        _model_row("shifted", "forward", 0.4),
        _model_row("official", "forward", 0.9),
        _model_row("shifted", "train", 2.0),
    ]
    lines = bench_model.format_table(rows, FLOPS, batch=2, cores=2)
    ours_fwd, off_fwd, ours_train = lines[2:]
    # forward: official 0.45 s/clip, ours 0.2 s/clip -> 2.25x
    assert ours_fwd.split()[:5] == ["forward", "shifted", "5.0", "0.400", "0.200"]
    assert "0.450" in ours_fwd and "2.25x" in ours_fwd
    assert off_fwd.split()[:5] == ["forward", "official", "-", "0.900", "0.450"]
    assert "not measured (pass --official-repo)" in ours_train  # no official train row given


def _rnc_result(ms, **extra):
    return {"ms": ms, "lo": 0.9 * ms, "hi": 1.1 * ms, "temp_bytes": None, **extra}


def test_rnc_table_without_official_says_not_measured():
    rows = [(256, {"pairwise": _rnc_result(30.0), "sorted": _rnc_result(3.0)})]
    header, rule, line = bench_rnc.format_table(rows, ["pairwise", "sorted"])
    assert "official torch ms (min-max)" in header and "official / auto" in header
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "not measured (pass --official-repo)"
    assert cells[-1] == "-"


def test_rnc_table_prints_official_ours_and_ratio():
    rows = [
        (64, {"official": _rnc_result(20.0), "pairwise": _rnc_result(0.5), "sorted": _rnc_result(1.0)}),
        (256, {"official": _rnc_result(300.0), "pairwise": _rnc_result(30.0), "sorted": _rnc_result(3.0)}),
        (1024, {"sorted": _rnc_result(50.0), "official_note": "skipped (needs ~16 GiB)"}),
    ]
    lines = bench_rnc.format_table(rows, ["pairwise", "sorted"])
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0][1] == "20 (18-22)" and cells[0][4] == "pairwise" and cells[0][-1] == "40.00x"
    assert cells[1][1] == "300 (270-330)" and cells[1][4] == "sorted" and cells[1][-1] == "100.00x"
    assert cells[2][1] == "skipped (needs ~16 GiB)" and cells[2][2] == "skipped" and cells[2][-1] == "-"


def test_rnc_plot_draws_the_official_curve_only_when_measured(tmp_path):
    ours = [(256, {"sorted": _rnc_result(3.0)}), (1024, {"sorted": _rnc_result(50.0)})]
    assert bench_rnc.plot(ours, ["sorted"], tmp_path / "a.png", "t") == ["JAX sorted"]
    both = [(256, {"sorted": _rnc_result(3.0), "official": _rnc_result(300.0)})]
    labels = bench_rnc.plot(both, ["sorted"], tmp_path / "b.png", "t")
    assert labels == ["JAX sorted", "official PyTorch (same run)"]
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "b.png").stat().st_size > 0
