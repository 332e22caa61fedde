"""Tests for the CAMUS reader (coreecho_jax.data.transfer.camus) on synthetic downloads of both releases, the
ED -> ES reversal, the official and split-file folds, and each kind of bad input."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from coreecho_jax.data.synthetic.camus import (
    CamusSyntheticConfig,
    draw_patient,
    to_image,
    write_camus_dataset,
)
from coreecho_jax.data.transfer.camus import CamusError, read_camus, read_cfg, read_record, read_split_files
from coreecho_jax.data.transfer.folds import contiguous_folds
from coreecho_jax.errors import ConfigError, DataError

CFG_2023 = CamusSyntheticConfig(
    n_patients=9, seed=1, size=32, width=40, min_frames=8, max_frames=10, with_2ch=True, es_first_fraction=0.5
)
CFG_2019 = CamusSyntheticConfig(
    n_patients=5, seed=2, size=32, min_frames=8, max_frames=9, release="2019", n_testing=1
)


@pytest.fixture(scope="module")
def root_2023(tmp_path_factory) -> Path:
    return write_camus_dataset(tmp_path_factory.mktemp("camus") / "c2023", CFG_2023)


@pytest.fixture(scope="module")
def root_2019(tmp_path_factory) -> Path:
    return write_camus_dataset(tmp_path_factory.mktemp("camus") / "c2019", CFG_2019)


def _drawn(cfg: CamusSyntheticConfig, patient: str) -> tuple[np.ndarray, np.ndarray]:
    """The undegraded drawing of a patient and its LV masks, at the stored image size, ED first."""
    video, _ = draw_patient(cfg, int(patient[len("patient") :]))
    masks = to_image(video.lv_mask.astype(np.uint8) * 255, cfg.row_scale, cfg.width) > 127
    return to_image(video.frames, cfg.row_scale, cfg.width), masks


def _clean(cfg: CamusSyntheticConfig, patient: str) -> np.ndarray:
    return _drawn(cfg, patient)[0]


def test_2023_layout_records(root_2023):
    ds = read_camus(root_2023)
    assert len(ds) == 9 and not ds.skipped and ds.view == "4CH"
    assert [r.patient for r in ds] == [f"patient{i:04d}" for i in range(1, 10)]
    assert {r.quality for r in ds} == {"Good", "Medium", "Poor"}
    rec = ds["patient0001"]
    with pytest.raises(KeyError, match="patient0010"):
        ds["patient0010"]
    assert rec.release == "2023-nifti" and rec.subset is None and rec.fps == 30.0
    assert rec.path.name == "patient0001_4CH_half_sequence.nii.gz"
    assert (rec.height, rec.width) == (40, 40)
    mm = 10 * 0.16 * 112 / 32  # the drawing's pixel size; rows stretched by row_scale 1.25
    np.testing.assert_allclose(rec.spacing_mm, (mm / 1.25, mm), rtol=1e-6)
    cfg = read_cfg(rec.cfg_path)
    assert rec.ef == float(cfg["EF"]) and rec.sex == cfg["Sex"] and rec.age == float(cfg["Age"])
    frames = rec.frames()
    assert frames.dtype == np.uint8 and frames.shape == (rec.num_frames, 40, 40)


def test_frames_run_ed_to_es_whatever_the_stored_order(root_2023):
    ds = read_camus(root_2023)
    orders = {r.stored_es_first for r in ds}
    assert orders == {True, False}
    for rec in ds:
        frames = rec.frames()
        stored = sitk.GetArrayFromImage(sitk.ReadImage(str(rec.path)))
        expected = stored[::-1] if rec.stored_es_first else stored
        np.testing.assert_array_equal(frames, expected)
        assert (rec.ed_frame, rec.es_frame) == (
            (rec.nb_frames, 1) if rec.stored_es_first else (1, rec.nb_frames)
        )
        clean, lv = _drawn(CFG_2023, rec.patient)
        if rec.quality == "Good":
            np.testing.assert_array_equal(frames, clean)
        # every quality: the wall strip that is LV cavity at ED and tissue at ES is dark (blood) in
        # frame 0 and bright in the last frame
        strip = lv[0] & ~lv[-1]
        assert strip.sum() >= 5
        assert frames[0][strip].mean() + 20 < frames[-1][strip].mean()


def test_the_2023_segmentation_gives_the_lv_of_every_frame_ed_to_es(root_2023, root_2019, tmp_path):
    ds = read_camus(root_2023)
    for rec in ds:
        masks = rec.lv_masks()
        assert rec.gt_path.name == f"{rec.patient}_4CH_half_sequence_gt.nii.gz"
        np.testing.assert_array_equal(
            masks, _drawn(CFG_2023, rec.patient)[1]
        )  # ED first, stored order undone
    with pytest.raises(CamusError, match="segments ED and ES only"):
        read_camus(root_2019).records[0].lv_masks()
    root = _copy(root_2023, tmp_path)
    rec = read_camus(root)["patient0002"]
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(rec.gt_path)))
    sitk.WriteImage(sitk.GetImageFromArray(stored[:-1]), str(rec.gt_path))
    with pytest.raises(
        CamusError, match=f"{rec.nb_frames - 1} frames of 40 x 40 px, the sequence has {rec.nb_frames}"
    ):
        rec.lv_masks()


def test_poor_images_are_visibly_degraded(root_2023):
    ds = read_camus(root_2023)
    diff = {q: [] for q in ("Good", "Medium", "Poor")}
    for rec in ds:
        diff[rec.quality].append(np.abs(rec.frames().astype(float) - _clean(CFG_2023, rec.patient)).mean())
    assert max(diff["Good"]) == 0.0
    assert min(diff["Poor"]) > max(diff["Medium"]) > 0.0
    assert min(diff["Poor"]) > 8.0  # grey levels per pixel


def test_two_chamber_view_is_a_switch(root_2023):
    a4c, a2c = read_camus(root_2023, "A4C"), read_camus(root_2023, "2CH")
    assert a2c.view == "2CH" and len(a2c) == len(a4c)
    r4, r2 = a4c["patient0002"], a2c["patient0002"]
    assert r2.path.name == "patient0002_2CH_half_sequence.nii.gz" and r2.ef == r4.ef
    assert not np.array_equal(r2.frames(), r4.frames())
    with pytest.raises(ConfigError, match="view"):
        read_camus(root_2023, "3CH")


def test_2019_layout_records(root_2019):
    ds = read_camus(root_2019)
    assert len(ds) == 5 and not ds.skipped
    assert [r.subset for r in ds] == ["training"] * 4 + ["testing"]
    for rec in ds:
        cfg = read_cfg(rec.cfg_path)
        assert rec.release == "2019-mhd" and rec.path.suffix == ".mhd" and rec.fps is None
        assert (
            rec.ef == float(cfg["LVef"])
            and rec.edv_ml == float(cfg["LVedv"])
            and rec.esv_ml == float(cfg["LVesv"])
        )
        assert rec.frames().shape == (rec.num_frames, 40, 32)
    # the training folder alone is a root too
    assert len(read_camus(root_2019 / "training")) == 4


def test_official_folds_are_contiguous_blocks_of_the_sorted_list():
    names = [f"patient{i:04d}" for i in range(500, 0, -1)]  # unsorted on purpose
    folds = contiguous_folds(names, 10)
    ordered = sorted(names)
    for k, fold in enumerate(folds):
        assert fold.test == tuple(ordered[50 * k : 50 * k + 50])
        assert fold.train == tuple(ordered[: 50 * k] + ordered[50 * k + 50 :]) and fold.val == ()
    uneven = contiguous_folds([f"p{i:02d}" for i in range(23)], 10)
    assert [len(f.test) for f in uneven] == [2, 2, 2, 3, 2, 2, 3, 2, 2, 3]  # floor(23 k / 10) bounds
    assert sum((f.test for f in uneven), ()) == tuple(f"p{i:02d}" for i in range(23))
    with pytest.raises(DataError, match="cannot fill"):
        contiguous_folds(["a", "b"], 10)


def test_dataset_folds_official_and_split_files(root_2023):
    ds = read_camus(root_2023)
    folds = ds.folds(n_folds=3)
    assert [f.test for f in folds] == [
        tuple(f"patient{i:04d}" for i in range(3 * k + 1, 3 * k + 4)) for k in range(3)
    ]
    (split,) = ds.folds("split_files")
    split_dir = root_2023 / "CAMUS_public" / "database_split"
    listed = {
        role: (split_dir / f"subgroup_{role}.txt").read_text().split()
        for role in ("training", "validation", "testing")
    }
    assert (list(split.train), list(split.val), list(split.test)) == (
        listed["training"],
        listed["validation"],
        listed["testing"],
    )
    assert sorted(split.train + split.val + split.test) == [r.patient for r in ds]
    with pytest.raises(ConfigError, match="scheme"):
        ds.folds("random")


def test_ten_fold_subgroup_files_and_unknown_patients(tmp_path):
    for k in (1, 2):
        (tmp_path / f"subGroup{k}_training.txt").write_text(
            "patient0001\npatient0002\n" if k == 1 else "3\n4\n"
        )
        (tmp_path / f"subGroup{k}_testing.txt").write_text("patient0003\n" if k == 1 else "patient0001\n")
    folds = read_split_files(tmp_path)
    assert [(f.train, f.test) for f in folds] == [
        (("patient0001", "patient0002"), ("patient0003",)),
        (("patient0003", "patient0004"), ("patient0001",)),
    ]
    with pytest.raises(CamusError, match=r"subGroup2_training\.txt.*not in the dataset.*patient0004"):
        read_split_files(tmp_path, known={"patient0001", "patient0002", "patient0003"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(CamusError, match="no split files"):
        read_split_files(tmp_path / "empty")
    with pytest.raises(CamusError, match="split folder not found"):
        read_split_files(tmp_path / "absent")


def _copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(root / "CAMUS_public" / "database_nifti", dst)
    return dst


def _edit_cfg(path: Path, **changes: str | None) -> None:
    cfg = read_cfg(path)
    for k, v in changes.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    path.write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "patient0003_4CH_half_sequence.nii.gz").unlink(), "no 4CH sequence"),
        (lambda p: (p / "patient0003_4CH_half_sequence.nii.gz").write_bytes(b"not an image"), "cannot read"),
        (lambda p: (p / "Info_4CH.cfg").unlink(), "info file not found"),
        (lambda p: _edit_cfg(p / "Info_4CH.cfg", EF=None), "no EF or LVef"),
        (lambda p: _edit_cfg(p / "Info_4CH.cfg", EF="high"), "EF must be a number"),
        (lambda p: _edit_cfg(p / "Info_4CH.cfg", ImageQuality="Excellent"), "ImageQuality must be one of"),
        (
            lambda p: _edit_cfg(p / "Info_4CH.cfg", ED="1", ES="40"),
            r"ES=40 must be distinct frames in 1\.\.NbFrame",
        ),
        (lambda p: _edit_cfg(p / "Info_4CH.cfg", ED="1", ES="1"), "must be distinct"),
        (lambda p: _edit_cfg(p / "Info_4CH.cfg", NbFrame="40", ED="1", ES="40"), "NbFrame=40 but"),
    ],
)
def test_bad_patient_is_skipped_and_listed_or_raises(root_2023, tmp_path, damage, message):
    root = _copy(root_2023, tmp_path)
    damage(root / "patient0003")
    ds = read_camus(root)
    assert [s.name for s in ds.skipped] == ["patient0003"] and len(ds) == 8
    assert "patient0003" in ds.skipped[0].reason and message.split()[0] in ds.skipped[0].reason
    assert "skipped patient0003" in ds.report()
    # the skipped patient leaves the folds without shifting the others' blocks
    folds = ds.folds(n_folds=9)  # one patient per official block
    assert [f.test for f in folds[1:4]] == [("patient0002",), (), ("patient0004",)]
    assert all("patient0003" not in f.train for f in folds)
    with pytest.raises(CamusError, match=message) as err:
        read_camus(root, on_error="raise")
    assert "patient0003" in str(err.value)


def test_missing_raw_file_and_frame_count_mismatch(root_2019, tmp_path):
    root = tmp_path / "c2019"
    shutil.copytree(root_2019 / "training", root)
    (root / "patient0001" / "patient0001_4CH_sequence.raw").unlink()
    with pytest.raises(CamusError, match=r"patient0001_4CH_sequence\.mhd: its pixel file .* is missing"):
        read_record(root / "patient0001")
    rec = read_record(root / "patient0002")
    bad = rec.__class__(**{**rec.__dict__, "nb_frames": rec.nb_frames + 1})
    with pytest.raises(CamusError, match="frames decoded"):
        bad.frames()


def test_no_patients_and_all_bad(tmp_path):
    with pytest.raises(CamusError, match="root folder not found"):
        read_camus(tmp_path / "absent")
    with pytest.raises(CamusError, match="no patientNNNN folders"):
        read_camus(tmp_path)
    (tmp_path / "patient0001").mkdir()
    with pytest.raises(CamusError, match="none of 1 patient folders is readable"):
        read_camus(tmp_path)
    with pytest.raises(ConfigError, match="on_error"):
        read_camus(tmp_path, on_error="ignore")


def _patient(folder: Path, image: sitk.Image) -> Path:
    folder.mkdir(parents=True)
    sitk.WriteImage(image, str(folder / f"{folder.name}_4CH_half_sequence.nii.gz"))
    (folder / "Info_4CH.cfg").write_text("ED: 1\nES: 5\nNbFrame: 5\nImageQuality: Good\nEF: 50\n")
    return folder


def test_image_shapes_single_slice_4d_and_bad_dimensions(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (5, 6, 7), dtype=np.uint8)
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(f[None]) for f in frames])  # size (7, 6, 1, 5)
    rec = read_record(_patient(tmp_path / "patient0001", four_d))
    assert (rec.nb_frames, rec.height, rec.width) == (5, 6, 7) and rec.fps is None and rec.sex is None
    np.testing.assert_array_equal(rec.frames(), frames)
    with pytest.raises(CamusError, match=r"expected a 2-D \+ time image"):
        read_record(_patient(tmp_path / "patient0002", sitk.GetImageFromArray(frames[0])))
    rgb = sitk.GetImageFromArray(np.zeros((5, 6, 7, 3), np.uint8), isVector=True)
    with pytest.raises(CamusError, match="expected grey pixels"):
        read_record(_patient(tmp_path / "patient0003", rgb))


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_a_truncated_nifti_is_skipped_with_the_reason_not_read_as_black_frames(root_2023, tmp_path, keep):
    root = _copy(root_2023, tmp_path)
    seq = root / "patient0003" / "patient0003_4CH_half_sequence.nii.gz"
    data = seq.read_bytes()
    seq.write_bytes(data[: int(len(data) * keep)])
    ds = read_camus(root)
    assert [s.name for s in ds.skipped] == ["patient0003"] and len(ds) == 8
    nb = int(read_cfg(root / "patient0003" / "Info_4CH.cfg")["NbFrame"])
    need = 352 + 40 * 40 * nb  # NIfTI-1 data offset + one byte per voxel
    assert re.fullmatch(
        rf"{re.escape(str(seq))}: decompresses to \d+ bytes, the header needs {need} \(40 x 40 x {nb} "
        r"voxels of 1 byte\(s\)\): the file is truncated \(a reader would fill the missing frames with black\)",
        ds.skipped[0].reason,
    )
    assert ds.report().splitlines()[0].endswith(", 1 skipped")
    with pytest.raises(CamusError, match="the file is truncated"):
        read_camus(root, on_error="raise")


def test_a_truncated_raw_file_is_named_not_called_missing(root_2019, tmp_path):
    root = tmp_path / "c2019"
    shutil.copytree(root_2019 / "training", root)
    raw = root / "patient0002" / "patient0002_4CH_sequence.raw"
    size = raw.stat().st_size
    raw.write_bytes(raw.read_bytes()[:-10])
    ds = read_camus(root)
    (skipped,) = ds.skipped
    assert skipped.reason == (
        f"{raw.with_suffix('.mhd')}: its pixel file {raw} holds {size - 10} bytes, the header needs {size} "
        f"(32 x 40 x {size // (32 * 40)} voxels of 1 byte(s)): the file is truncated"
    )
    assert "No such file" not in skipped.reason
    assert ds.report().splitlines()[0] == (
        f"CAMUS 4CH at {root}: 3 of 4 patients read "
        f"({', '.join(f'{q} {sum(r.quality == q for r in ds)}' for q in ('Good', 'Medium', 'Poor'))}), 1 skipped"
    )


def test_pixels_that_fail_later_count_as_skipped_in_the_headline(root_2019, tmp_path, monkeypatch):
    from configs import camus_demo
    from coreecho_jax.data.transfer.camus import CamusRecord
    from coreecho_jax.transfer import data as transfer_sets

    c = camus_demo.get_config("quick")
    c.data.synthetic.enabled = False
    c.data.root = str(root_2019)
    frames = CamusRecord.frames

    def fail_one(self):
        if self.patient == "patient0003":
            raise CamusError(f"{self.path}: cannot decode")
        return frames(self)

    monkeypatch.setattr(CamusRecord, "frames", fail_one)
    c.data.n_folds = 2
    prepared = transfer_sets.prepare("camus", c.data, tmp_path, progress=False)
    assert prepared.source.startswith(f"CAMUS 4CH at {root_2019}: 4 of 5 patients read (")
    assert ", 1 skipped; 4 clips of 8 x 32 x 32" in prepared.source
    assert [s.name for s in prepared.skipped] == ["patient0003"]


def test_ef_given_as_fractions_is_refused(root_2023, tmp_path):
    root = _copy(root_2023, tmp_path)
    for cfg in sorted(root.glob("patient*/Info_4CH.cfg")):
        _edit_cfg(cfg, EF=f"{float(read_cfg(cfg)['EF']) / 100:.4f}")
    with pytest.raises(
        CamusError,
        match=r"(?s)the 9 Info_4CH\.cfg files read: every EF is within 0-1.*fractions.*"
        r"EF must be in percent.*multiply each EF by 100",
    ) as err:
        read_camus(root)
    assert str(root) in str(err.value)
    _edit_cfg(root / "patient0001" / "Info_4CH.cfg", EF="55.5")  # one EF in percent: a percent set
    assert read_camus(root)["patient0001"].ef == 55.5
