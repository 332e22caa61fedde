"""Tests for the synthetic CAMUS and HMC-QU writers (coreecho_jax.data.synthetic.camus / hmcqu):
determinism, idempotent writing, the labels they write, and an MI label that lives only in the motion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from coreecho_jax import cli
from coreecho_jax.data.synthetic import hmcqu as hmcqu_writer
from coreecho_jax.data.synthetic.camus import CamusSyntheticConfig, quota_labels, write_camus_dataset
from coreecho_jax.data.synthetic.echonet import DatasetExistsError
from coreecho_jax.data.synthetic.heart import A4C_SEGMENTS
from coreecho_jax.data.synthetic.hmcqu import (
    HmcQuSyntheticConfig,
    draw_recording,
    to_frame_size,
    write_hmcqu_dataset,
)
from coreecho_jax.data.transfer.camus import read_camus, read_cfg
from coreecho_jax.data.transfer.hmcqu import read_hmcqu, read_sheet
from coreecho_jax.errors import ConfigError

CAMUS = CamusSyntheticConfig(n_patients=4, seed=7, size=32, min_frames=8, max_frames=9)
HMCQU = HmcQuSyntheticConfig(
    n_videos=4, seed=7, size=32, height=40, width=48, min_frames=24, max_frames=26, n_folds=2
)


def _camus_content(root: Path) -> list:
    return [
        (r.patient, r.ef, r.quality, r.ed_frame, read_cfg(r.cfg_path), r.frames().tobytes())
        for r in read_camus(root)
    ]


def _hmcqu_content(root: Path) -> list:
    ds = read_hmcqu(root, subset="all")
    return [(r.echo, r.segments, r.start_frame, r.end_frame, r.has_mask, r.cycle().tobytes()) for r in ds]


@pytest.mark.parametrize("release", ["2023", "2019"])
def test_camus_writer_is_deterministic_and_idempotent(tmp_path, release):
    cfg = dataclasses.replace(CAMUS, release=release)
    a = write_camus_dataset(tmp_path / "a", cfg)
    b = write_camus_dataset(tmp_path / "b", cfg)
    assert _camus_content(a) == _camus_content(b)
    other = write_camus_dataset(tmp_path / "c", dataclasses.replace(cfg, seed=8))
    assert _camus_content(other) != _camus_content(a)
    stamp = {p: p.stat().st_mtime_ns for p in a.rglob("*") if p.is_file()}
    assert write_camus_dataset(a, cfg) == a
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*") if p.is_file()} == stamp
    with pytest.raises(DatasetExistsError, match="another synthetic dataset"):
        write_camus_dataset(a, cfg, n_patients=5)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("mine")
    with pytest.raises(DatasetExistsError, match="not a synthetic dataset"):
        write_camus_dataset(tmp_path / "foreign", cfg)


def test_camus_labels_cover_the_variants(tmp_path):
    root = write_camus_dataset(tmp_path / "c", CAMUS, n_patients=6, width=44)
    ds = read_camus(root)
    assert {r.quality for r in ds} == {"Good", "Medium", "Poor"}
    assert {r.stored_es_first for r in ds} == {True, False}
    assert {(r.height, r.width) for r in ds} == {(40, 44)}
    for rec in ds:
        frames = rec.frames()
        # the LV is largest at ED: the dark cavity shrinks, so the image brightens from frame 0 to the last
        assert frames[0].mean() < frames[-1].mean()
        assert 10 <= rec.ef <= 85


def test_quota_labels():
    rng = np.random.default_rng(0)
    labels = quota_labels(3, (0.35, 0.45, 0.2), rng)
    assert sorted(labels) == [0, 1, 2]
    assert sorted(quota_labels(20, (0.35, 0.45, 0.2), rng)) == [0] * 7 + [1] * 9 + [2] * 4


def test_config_checks():
    with pytest.raises(ConfigError, match="release"):
        CamusSyntheticConfig(release="2020")
    with pytest.raises(ConfigError, match="min_frames"):
        CamusSyntheticConfig(min_frames=4)
    with pytest.raises(ConfigError, match="height <= width"):
        HmcQuSyntheticConfig(height=100, width=80)
    with pytest.raises(ConfigError, match="header"):
        HmcQuSyntheticConfig(header="three_rows")
    for bad in [(0, 1), (3, 2), (1, 7), (2,)]:
        with pytest.raises(ConfigError, match="mi_segments"):
            HmcQuSyntheticConfig(mi_segments=bad)


def test_writers_take_a_dict_or_overrides_and_refuse_another_config(tmp_path):
    a = write_camus_dataset(tmp_path / "a", CAMUS.to_dict())
    b = write_camus_dataset(tmp_path / "b", None, **CAMUS.to_dict())
    assert (
        _camus_content(a) == _camus_content(b) == _camus_content(write_camus_dataset(tmp_path / "c", CAMUS))
    )
    with pytest.raises(TypeError, match="must be a CamusSyntheticConfig"):
        write_camus_dataset(tmp_path / "d", HMCQU)
    with pytest.raises(TypeError, match="must be a HmcQuSyntheticConfig"):
        write_hmcqu_dataset(tmp_path / "e", CAMUS)


def test_command_lines(tmp_path):
    argv = [
        "synthetic",
        "--dataset=camus",
        f"--root={tmp_path / 'c'}",
        "--release=2019",
        "--n=3",
        "--size=32",
    ]
    root = cli.parse(argv).run()
    assert [r.patient for r in read_camus(root)] == ["patient0001", "patient0002", "patient0003"]
    argv = ["synthetic", "--dataset=hmcqu", f"--root={tmp_path / 'h'}", "--n=10", "--seed=3", "--size=32"]
    root = cli.parse([*argv, "--height=40", "--width=48", "--header=two_rows"]).run()
    assert len(read_hmcqu(root, subset="all")) == 10
    with pytest.raises(cli.UsageError, match="--release: a flag of --dataset=camus, not of --dataset=hmcqu"):
        cli.parse([*argv, "--release=2019"]).run()


def test_hmcqu_writer_is_deterministic(tmp_path):
    a = write_hmcqu_dataset(tmp_path / "a", HMCQU)
    b = write_hmcqu_dataset(tmp_path / "b", HMCQU)
    assert _hmcqu_content(a) == _hmcqu_content(b)
    assert (a / "hmcqu_folds.csv").read_bytes() == (b / "hmcqu_folds.csv").read_bytes()
    assert write_hmcqu_dataset(a, HMCQU) == a
    with pytest.raises(DatasetExistsError):
        write_hmcqu_dataset(a, HMCQU, seed=8)


def test_hmcqu_sheet_labels_follow_the_drawn_segment(tmp_path):
    root = write_hmcqu_dataset(tmp_path / "h", HMCQU, n_videos=8)
    rows, _ = read_sheet(root / "A4C.xlsx")
    mi = [r for r in rows if any(r.segments.values())]
    assert 0 < len(mi) < len(rows)
    for r in rows:
        assert sum(r.segments.values()) <= 1
        assert r.end_frame - r.start_frame >= 8
    assert len(read_hmcqu(root)) == sum(r.has_mask for r in rows)
    # each AVI is the drawing of its row's label: the MI segment hypokinetic, or none
    cfg = dataclasses.replace(HMCQU, n_videos=8)
    for i, (row, rec) in enumerate(zip(rows, read_hmcqu(root, subset="all"))):
        segment = next((int(s[3:]) for s, is_mi in row.segments.items() if is_mi), None)
        video, start, end = draw_recording(cfg, i, segment)
        assert (start, end) == (rec.start_frame, rec.end_frame)
        frames = to_frame_size(video.frames, cfg.height, cfg.width)[start - 1 : end]
        np.testing.assert_array_equal(rec.cycle(), frames)


def test_mi_territory_labels_adjacent_segments_and_draws_them(tmp_path):
    cfg = dataclasses.replace(HMCQU, n_videos=12, mi_segments=(2, 3), mi_segment_motion=0.0)
    root = write_hmcqu_dataset(tmp_path / "h", cfg)
    rows, _ = read_sheet(root / "A4C.xlsx")
    territories = [tuple(int(s[3:]) for s, is_mi in r.segments.items() if is_mi) for r in rows]
    mi = [t for t in territories if t]
    assert 0 < len(mi) < len(rows)
    order = hmcqu_writer.WALL_ORDER
    for t in mi:  # a run of 2 or 3 neighbours along the wall
        first = order.index(t[0])
        assert 2 <= len(t) <= 3 and t == order[first : first + len(t)]
    for i, (t, rec) in enumerate(zip(territories, read_hmcqu(root, subset="all"))):
        video, start, end = draw_recording(cfg, i, t or None)
        frames = to_frame_size(video.frames, cfg.height, cfg.width)[start - 1 : end]
        np.testing.assert_array_equal(rec.cycle(), frames)
        expected = (*t, 4) if {3, 5} <= set(t) else t
        assert video.params.hypokinetic_segments == expected


def test_mi_territory_draw_is_uniform_over_runs():
    rng = np.random.default_rng(0)
    runs = [hmcqu_writer.mi_territory(rng, 1, 2) for _ in range(6000)]
    counts = {r: runs.count(r) for r in set(runs)}
    assert len(counts) == 6 + 5  # every single segment and every adjacent pair
    singles = sum(c for r, c in counts.items() if len(r) == 1)
    assert abs(singles / len(runs) - 0.5) < 0.03
    assert counts[(3, 5)] > 0  # the apical cap sits between 3 and 5, which are neighbours


@pytest.mark.parametrize("segment", [2, 7])
def test_mi_is_visible_only_in_motion(segment):
    """The same video drawn with and without a hypokinetic segment: the same picture at ED (the heart
    at rest), different during contraction, with a larger LV at ES."""
    normal, start, end = draw_recording(HMCQU, 1, None)
    mi, start_mi, end_mi = draw_recording(HMCQU, 1, segment)
    assert segment in A4C_SEGMENTS and (start, end) == (start_mi, end_mi)
    diff = np.abs(mi.frames.astype(int) - normal.frames).mean(axis=(1, 2))
    ed, es = start - 1, int(np.argmax(normal.contraction))
    assert normal.contraction[ed] < 0.05 and diff[ed] < 0.05  # only float rounding at ED
    assert diff[es] > 0.5 and diff[es] > 20 * diff[ed]
    assert mi.lv_mask[es].sum() > normal.lv_mask[es].sum()
    # the annotated cycle runs from ED to the next ED through ES
    assert normal.contraction[end - 1] < 0.05 and normal.contraction[start - 1 : end].max() > 0.9
