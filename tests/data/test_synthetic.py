"""Tests for the synthetic EchoNet-Dynamic writer (coreecho_jax.data.synthetic.echonet): layout, labels
that follow the pictured heart, LV mask files, determinism (pinned against reference checksums: CSVs on
every machine, frames bit for bit on the reference platform and within a tolerance elsewhere), and EF
that lives in the motion rather than in any single frame."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from coreecho_jax import cli
from coreecho_jax.data import echonet_layout as layout
from coreecho_jax.data import synthetic as syn
from coreecho_jax.data.echonet.reader import read_echonet
from coreecho_jax.data.video.video_io import read_video
from coreecho_jax.errors import ConfigError, DataError
from tests.fixtures.synthetic_ref import make_reference
from tests.paths import REPO

FILELIST_HEADER = "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split"
TRACINGS_HEADER = "FileName,X1,Y1,X2,Y2,Frame"

# Small but representative: frame counts straddle 144 (both short and long videos).
SMALL = syn.SyntheticConfig(n_videos=12, seed=3, min_frames=60, max_frames=150)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return syn.write_echonet_dataset(
        tmp_path_factory.mktemp("syn") / "echonet", SMALL, progress=False, write_masks=True
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _tracings(root: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """{FileName with .avi: [(frame, float [rows, 4]) in file order]}."""
    out: dict[str, dict[int, list]] = {}
    for r in _rows(root / "VolumeTracings.csv"):
        out.setdefault(r["FileName"], {}).setdefault(int(r["Frame"]), []).append(
            [float(r[k]) for k in ("X1", "Y1", "X2", "Y2")]
        )
    return {name: [(f, np.array(v)) for f, v in frames.items()] for name, frames in out.items()}


def _polygon_mask(chords: np.ndarray, size: int) -> np.ndarray:
    """EchoNet's polygon from the chord ends (long-axis row skipped), as a bool [size, size] mask."""
    poly = np.concatenate([chords[1:, :2], chords[1:, 2:][::-1]])
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1, shift=4)
    return mask.astype(bool)


def _disc_volume_ml(chords: np.ndarray, cm_per_px: float) -> float:
    """Simpson's method of discs from a tracing: sum of pi (d/2)^2 * (L / n)."""
    (x1, y1, x2, y2), discs = chords[0], chords[1:]
    length = math.hypot(x2 - x1, y2 - y1)
    d = np.hypot(discs[:, 2] - discs[:, 0], discs[:, 3] - discs[:, 1])
    return float(np.sum(np.pi * (d / 2) ** 2) * length / len(discs) * cm_per_px**3)


# ------------------------------------------------------------------------------------ layout


def test_layout_headers_and_files(dataset):
    assert (dataset / "FileList.csv").read_text().splitlines()[0] == FILELIST_HEADER
    assert (dataset / "VolumeTracings.csv").read_text().splitlines()[0] == TRACINGS_HEADER
    assert json.loads((dataset / "synthetic.json").read_text())["config"] == SMALL.to_dict()
    rows = _rows(dataset / "FileList.csv")
    assert len(rows) == SMALL.n_videos
    names = [r["FileName"] for r in rows]
    assert all(re.fullmatch(r"0X[0-9A-F]{16}", n) for n in names), names
    assert len(set(names)) == len(names)
    assert sorted(p.name for p in (dataset / "Videos").iterdir()) == sorted(f"{n}.avi" for n in names)
    assert {r["Split"] for r in rows} == {"TRAIN", "VAL", "TEST"}


def test_filelist_matches_written_videos(dataset):
    for r in _rows(dataset / "FileList.csv"):
        video = read_video(dataset / "Videos" / f"{r['FileName']}.avi")
        t, h, w = video.frames.shape
        assert (int(r["NumberOfFrames"]), int(r["FrameHeight"]), int(r["FrameWidth"])) == (t, h, w)
        assert float(r["FPS"]) == pytest.approx(video.fps) == SMALL.fps
        assert SMALL.min_frames <= t <= SMALL.max_frames


def test_ef_is_exactly_from_volumes(dataset):
    for r in _rows(dataset / "FileList.csv"):
        ef, esv, edv = float(r["EF"]), float(r["ESV"]), float(r["EDV"])
        assert ef == pytest.approx(100.0 * (edv - esv) / edv, rel=1e-12, abs=1e-12)
        assert SMALL.ef_range[0] - 1 <= ef <= SMALL.ef_range[1]
        assert 0 < esv < edv


def test_reads_through_the_echonet_reader(dataset):
    index = read_echonet(dataset)
    assert len(index.records) == SMALL.n_videos and not index.dropped_untraced
    by_name = {r["FileName"]: r for r in _rows(dataset / "FileList.csv")}
    for rec in index.records:
        assert rec.ef == float(by_name[rec.filename]["EF"])
        assert rec.split == by_name[rec.filename]["Split"].lower()


def test_some_videos_need_padding(dataset):
    counts = [int(r["NumberOfFrames"]) for r in _rows(dataset / "FileList.csv")]
    assert min(counts) < 144 <= max(counts)


# ---------------------------------------------------------------------------------- tracings


def test_tracings_two_frames_per_video_at_ed_and_es(dataset):
    rows = {r["FileName"]: r for r in _rows(dataset / "FileList.csv")}
    tracings = _tracings(dataset)
    assert sorted(tracings) == sorted(f"{n}.avi" for n in rows)
    cm_per_px = SMALL.cm_per_px * 112 / SMALL.size
    for name, frames in tracings.items():
        row = rows[name[:-4]]
        assert len(frames) == 2, name
        (es_frame, es), (ed_frame, ed) = frames  # EchoNet order: small (ES) first, large (ED) last
        assert min(es_frame, ed_frame) >= 0 and max(es_frame, ed_frame) < int(row["NumberOfFrames"])
        assert ed_frame < es_frame  # one beat: ED then its ES
        assert es.shape == ed.shape == (1 + syn.NUM_CHORDS, 4)
        # Simpson's discs of the tracing give back the listed volumes (20 discs: ~0.2 % error).
        assert _disc_volume_ml(ed, cm_per_px) == pytest.approx(float(row["EDV"]), rel=0.01)
        assert _disc_volume_ml(es, cm_per_px) == pytest.approx(float(row["ESV"]), rel=0.01)


def test_traced_polygon_is_the_dark_cavity(dataset):
    """The traced region is the drawn cavity: dark inside, bright myocardium just outside."""
    kernel = np.ones((3, 3), np.uint8)
    for name, frames in _tracings(dataset).items():
        video = read_video(dataset / "Videos" / name).frames
        for frame, chords in frames:
            mask = _polygon_mask(chords, SMALL.size)
            inner = cv2.erode(mask.astype(np.uint8), kernel, iterations=1).astype(bool)
            dil = cv2.dilate(mask.astype(np.uint8), kernel, iterations=4).astype(bool)
            ring = dil & ~cv2.dilate(mask.astype(np.uint8), kernel, iterations=1).astype(bool)
            img = cv2.GaussianBlur(video[frame], (0, 0), 1.0).astype(float)
            assert img[inner].mean() < 0.5 * img[ring & (img > 0)].mean(), (name, frame)


# ----------------------------------------------------------------------- label distributions


def test_ef_distribution_is_echonet_like():
    cfg = syn.SyntheticConfig()
    ef = np.array([syn.sample_ef(syn.video_rng(0, i), cfg) for i in range(3000)])
    assert ef.min() >= 10.0 and ef.max() <= 85.0
    assert 55.0 < np.median(ef) < 62.0
    assert 0.55 < np.mean((ef >= 50) & (ef <= 70)) < 0.85
    assert 0.1 < np.mean(ef < 45) < 0.3  # a reduced-EF tail


def test_frame_counts_distribution():
    cfg = syn.SyntheticConfig()
    n = np.array([syn.sample_num_frames(syn.video_rng(0, i), cfg) for i in range(3000)])
    assert n.min() >= 100 and n.max() <= 220
    assert 0.2 < np.mean(n < 144) < 0.3


def test_volumes_in_range_and_ef_from_drawn_frames():
    cfg = syn.SyntheticConfig(min_frames=40, max_frames=60)
    for i in range(6):
        v = syn.draw_echonet_video(syn.video_rng(11, i), cfg)
        vol = v.volumes
        assert v.frames.shape == (len(vol), cfg.size, cfg.size) and v.frames.dtype == np.uint8
        assert 40.0 * 0.99 <= v.edv <= 250.0
        assert v.edv == vol[v.ed_frame] and v.esv == vol[v.es_frame]
        assert v.ef == pytest.approx(100 * (v.edv - v.esv) / v.edv)
        # The traced frames are the extremes of their beat.
        assert v.ed_frame < v.es_frame
        beat = vol[v.ed_frame : v.es_frame + 1]
        assert beat.max() == v.edv and beat.min() == v.esv


@pytest.mark.slow  # 200 videos of 75 frames
def test_ef_not_in_one_frame_but_in_the_motion():
    """Single-frame statistics of frame 0 say ~nothing about EF; the cavity's motion says it.

    Dark area = pixels of the sector darker than 0.45 x the sector's median after a small blur
    (a threshold relative to the video, since gain is random).
    """
    cfg = syn.SyntheticConfig(min_frames=75, max_frames=75)
    ef, mean0, dark0, ratio = [], [], [], []
    for i in range(200):
        v = syn.draw_echonet_video(syn.video_rng(2024, i), cfg)
        frames = v.frames
        blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in frames]).astype(np.float32)
        fan = frames.max(axis=0) > 0
        dark = (blurred < 0.45 * np.median(blurred[:, fan])) & fan
        area = dark.reshape(len(frames), -1).sum(axis=1)
        fan0 = frames[0] > 0
        dark_0 = (blurred[0] < 0.45 * np.median(blurred[0][fan0])) & fan0
        ef.append(v.ef)
        mean0.append(frames[0][fan0].mean())
        dark0.append(dark_0.sum() / fan0.sum())
        ratio.append(area.min() / area.max())
    ef = np.asarray(ef)
    assert ef.std() > 8.0  # a real spread to correlate with
    for name, x in (("mean intensity", mean0), ("dark area", dark0)):
        r = np.corrcoef(ef, x)[0, 1]
        assert abs(r) < 0.3, f"EF readable from frame-0 {name}: r = {r:.3f}"
    design = np.column_stack([np.ones_like(ef), mean0, dark0])
    fit = design @ np.linalg.lstsq(design, ef, rcond=None)[0]
    assert np.corrcoef(ef, fit)[0, 1] < 0.3
    r_motion = np.corrcoef(ef, ratio)[0, 1]
    assert r_motion < -0.8, f"min/max dark area over the video should track EF: r = {r_motion:.3f}"


# ----------------------------------------------------------------------------- LV masks


def test_mask_files_are_the_traced_cavity(dataset):
    """The mask file of each video has one mask per frame; at ED and ES it is the traced polygon."""
    rows = {r["FileName"]: r for r in _rows(dataset / "FileList.csv")}
    assert sorted(p.name for p in (dataset / syn.MASK_DIR).iterdir()) == sorted(f"{n}.npz" for n in rows)
    for name, frames in _tracings(dataset).items():
        mask = syn.read_mask(dataset, name)
        assert mask.dtype == bool and mask.shape == (
            int(rows[name[:-4]]["NumberOfFrames"]),
            SMALL.size,
            SMALL.size,
        )
        for frame, chords in frames:
            poly = _polygon_mask(chords, SMALL.size)
            iou = (poly & mask[frame]).sum() / (poly | mask[frame]).sum()
            assert iou > 0.9, (name, frame, iou)
        (es_frame, _), (ed_frame, _) = frames
        assert mask[ed_frame].sum() > mask[es_frame].sum()


def test_mask_area_follows_the_volumes(dataset):
    """Over all frames, the cavity area in the mask file tracks the drawn volume (area^1.5 ~ volume)."""
    for index in range(3):
        name = syn.video_file_name(SMALL.seed, index)
        area = syn.read_mask(dataset, name).sum(axis=(1, 2)).astype(float)
        volumes = syn.draw_echonet_video(syn.video_rng(SMALL.seed, index), SMALL).volumes
        assert np.corrcoef(area**1.5, volumes)[0, 1] > 0.99, name


def test_masks_added_to_a_complete_dataset_and_missing_mask_is_a_clear_error(tmp_path):
    cfg = syn.SyntheticConfig(n_videos=3, seed=2, min_frames=20, max_frames=24)
    root = syn.write_echonet_dataset(tmp_path / "d", cfg, progress=False)
    first = (root / "FileList.csv").read_bytes()
    name = syn.video_file_name(cfg.seed, 0)
    with pytest.raises(DataError, match=f"{name}.npz: no LV mask file"):
        syn.read_mask(root, name)
    syn.write_echonet_dataset(root, cfg, progress=False, write_masks=True)  # same config: masks added
    assert syn.read_mask(root, f"{name}.avi").shape[0] == len(
        read_video(root / "Videos" / f"{name}.avi").frames
    )
    assert (root / "FileList.csv").read_bytes() == first


# ----------------------------------------------------------------------------- determinism


@pytest.fixture(scope="module")
def reference_set(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """The 6-video set of ``make_reference.CONFIG``, written here, and its decoded frames."""
    root = syn.write_echonet_dataset(
        tmp_path_factory.mktemp("ref") / "ref", progress=False, **make_reference.CONFIG
    )
    return root, make_reference.decoded_videos(root)


def test_output_matches_the_reference_checksums(reference_set):
    """Byte-stable output, checked against ``tests/fixtures/synthetic_ref/reference.json`` (how it was
    made: ``make_reference.py``): the CSVs, synthetic.json and the video shapes on every machine; the
    decoded frames bit for bit where the platform fingerprint (CPU, numpy/OpenCV SIMD paths and
    versions, libc) is the reference's. Elsewhere the frames are held to the cross-platform tolerance
    by the next test, and a warning names what differs."""
    expected = json.loads(make_reference.REFERENCE.read_text())
    assert expected["config"] == make_reference.CONFIG
    root, videos = reference_set
    got = make_reference.checksums(root, videos)
    assert got["files"] == expected["files"]
    assert {n: v["shape"] for n, v in got["videos"].items()} == {
        n: v["shape"] for n, v in expected["videos"].items()
    }
    here, there = make_reference.platform_fingerprint(), expected["platform"]
    if here == there:
        assert got["videos"] == expected["videos"]
    else:
        differs = ", ".join(
            f"{k}: {here[k]!r} (reference {there.get(k)!r})" for k in here if here[k] != there.get(k)
        )
        warnings.warn(
            f"synthetic frames not compared bit for bit, this platform is not the reference's: {differs}",
            stacklevel=1,
        )


def test_frames_match_the_reference_within_the_cross_platform_tolerance(reference_set):
    """On any machine, each video's decoded frames are within the stated tolerance of the reference:
    no pixel of the stored frames more than 1 grey level off, at most 0.1 % of them different, and the
    per-frame pixel sums of all frames within the same budget."""
    _, videos = reference_set
    sample = make_reference.load_frame_sample()
    assert sorted(videos) == sorted(k for k in sample if not k.endswith("_sums"))
    for name, frames in videos.items():
        diff = make_reference.compare_frames(name, frames, sample)
        assert diff.within_tolerance, (
            f"{name}: {diff}; numpy {np.__version__}, OpenCV {cv2.__version__} "
            "(OpenCV 4.x draws other frames: requirements.txt asks for >= 5.0)"
        )


def test_another_simd_path_stays_within_the_tolerance(tmp_path):
    """Other CPUs run other SIMD code in numpy and OpenCV. Emulated here in a subprocess: numpy with all
    its dispatched SIMD targets disabled (``NPY_DISABLE_CPU_FEATURES``) and OpenCV unoptimised
    (``cv2.setUseOptimized(False)``). The frames stay within the tolerance of the reference; on the
    reference platform they are not bit-identical to it (measured: 49 of 10.7 million pixels, each
    1 grey level off), which is why the bit-for-bit check holds only there."""
    out = tmp_path / "frames.npz"
    script = (
        "import json, sys, cv2, numpy as np\n"
        "cv2.setUseOptimized(False)\n"
        "from tests.fixtures.synthetic_ref import make_reference as m\n"
        "np.savez(sys.argv[1], **m.drawn_videos())\n"
        "print(json.dumps([m.enabled_numpy_simd(), cv2.useOptimized()]))\n"
    )
    off = os.environ.get("NPY_DISABLE_CPU_FEATURES", "").replace(",", " ").split()  # already off here
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(off + make_reference.enabled_numpy_simd())}
    done = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout.splitlines()[-1]) == [[], False]  # the emulation took effect
    sample = make_reference.load_frame_sample()
    with np.load(out) as z:
        videos = {k: z[k] for k in z.files}
    for name, frames in videos.items():
        diff = make_reference.compare_frames(name, frames, sample)
        assert diff.within_tolerance, (name, diff)
    expected = json.loads(make_reference.REFERENCE.read_text())
    if make_reference.platform_fingerprint() == expected["platform"]:
        got = make_reference.frame_checksums(videos)
        assert sorted(got) == sorted(expected["videos"]) and got != expected["videos"]


def test_same_seed_same_bytes_and_frames(tmp_path, dataset):
    cfg = SMALL
    again = syn.write_echonet_dataset(tmp_path / "again", cfg, workers=2, progress=False)
    for name in ("FileList.csv", "VolumeTracings.csv"):
        assert (again / name).read_bytes() == (dataset / name).read_bytes()
    for avi in sorted((dataset / "Videos").iterdir())[:4]:
        np.testing.assert_array_equal(read_video(again / "Videos" / avi.name).frames, read_video(avi).frames)
    # Any single video can be reproduced from (seed, index) alone.
    rows = _rows(dataset / "FileList.csv")
    for index in (0, cfg.n_videos - 1):
        v = syn.draw_echonet_video(syn.video_rng(cfg.seed, index), cfg)
        assert rows[index]["FileName"] == syn.video_file_name(cfg.seed, index)
        assert float(rows[index]["EF"]) == v.ef
        np.testing.assert_array_equal(
            read_video(dataset / "Videos" / f"{rows[index]['FileName']}.avi").frames, v.frames
        )
        np.testing.assert_array_equal(syn.read_mask(dataset, rows[index]["FileName"]), v.lv_mask)


def test_other_seed_other_data():
    cfg = syn.SyntheticConfig(min_frames=30, max_frames=30)
    a = syn.draw_echonet_video(syn.video_rng(0, 0), cfg)
    b = syn.draw_echonet_video(syn.video_rng(1, 0), cfg)
    assert a.ef != b.ef and not np.array_equal(a.frames, b.frames)
    assert syn.video_file_name(0, 0) != syn.video_file_name(1, 0) != syn.video_file_name(0, 1)


def test_split_assignment():
    for n in range(8, 41):
        s = syn.split_assignment(n, seed=5)
        assert {x: s.count(x) > 0 for x in layout.FILELIST_SPLITS} == {
            x: True for x in layout.FILELIST_SPLITS
        }, n
        assert s == syn.split_assignment(n, seed=5)
    s = syn.split_assignment(512, seed=0)
    assert [s.count(x) for x in layout.FILELIST_SPLITS] == [384, 64, 64]
    assert s != syn.split_assignment(512, seed=1)


# ------------------------------------------------------------------------ idempotent / safety


def test_rewrite_is_a_no_op_and_other_content_is_refused(tmp_path):
    cfg = syn.SyntheticConfig(n_videos=3, seed=1, min_frames=20, max_frames=24)
    root = syn.write_echonet_dataset(tmp_path / "d", cfg, progress=False)
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert syn.write_echonet_dataset(root, cfg.to_dict(), progress=False) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamp

    with pytest.raises(
        syn.DatasetExistsError, match=r"different synthetic dataset \(differs in: n_videos, seed\)"
    ):
        syn.write_echonet_dataset(root, cfg, n_videos=4, seed=2, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "FileList.csv").write_text("FileName,EF\n")
    with pytest.raises(syn.DatasetExistsError, match="not a synthetic dataset"):
        syn.write_echonet_dataset(foreign, cfg, progress=False)
    assert (foreign / "FileList.csv").read_text() == "FileName,EF\n"


def test_interrupted_write_is_redone(tmp_path):
    cfg = syn.SyntheticConfig(n_videos=3, seed=1, min_frames=20, max_frames=24, with_tracings=False)
    root = syn.write_echonet_dataset(tmp_path / "d", cfg, progress=False)
    assert not (root / "VolumeTracings.csv").exists()
    first = (root / "FileList.csv").read_bytes()
    victim = next((root / "Videos").iterdir())
    victim.unlink()
    syn.write_echonet_dataset(root, cfg, progress=False)  # same config, incomplete: redone
    assert victim.is_file() and (root / "FileList.csv").read_bytes() == first


def test_cli(tmp_path):
    argv = [
        "synthetic",
        f"--root={tmp_path / 'cli'}",
        "--n=3",
        "--seed=4",
        "--min_frames=20",
        "--max_frames=22",
    ]
    root = cli.parse([*argv, "--noprogress"]).run()
    rows = _rows(root / "FileList.csv")
    assert [r["FileName"] for r in rows] == [syn.video_file_name(4, i) for i in range(3)]
    assert all(20 <= int(r["NumberOfFrames"]) <= 22 for r in rows)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="min_frames <= max_frames"):
        syn.SyntheticConfig(min_frames=50, max_frames=40)
    with pytest.raises(ConfigError, match="unknown keys"):
        syn.SyntheticConfig.from_dict({"n_video": 3})
    with pytest.raises(ConfigError, match="at least 8 frames"):
        syn.draw_echonet_video(syn.video_rng(0, 0), num_frames=5)
