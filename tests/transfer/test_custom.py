"""Your own cohort (issue 23, item 5): the manifest and its checks, its folds, the configs, the synthetic
demo cohort, the calibrated EF intervals of a cross-validated regression, and the loop end to end."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from configs import custom, custom_demo
from coreecho_jax import cli, config_check
from coreecho_jax.data.synthetic.manifest import write_manifest_dataset
from coreecho_jax.data.transfer import cycles
from coreecho_jax.data.transfer.manifest import ManifestError, read_manifest
from coreecho_jax.data.video import video_io
from coreecho_jax.errors import ConfigError
from coreecho_jax.evaluation import conformal
from coreecho_jax.transfer import data as transfer_sets
from coreecho_jax.transfer import intervals, loop, tasks
from tests.conftest import run_main

# ------------------------------------------------------------------------------------------ manifest


def _cohort(tmp_path: Path, text: str, files=("a.avi", "b.avi", "c.avi", "d.avi", "e.avi")) -> Path:
    """``tmp_path/cohort/manifest.csv`` holding ``text``, beside empty files ``videos/<files>``
    (the reader checks that each path is a file; it decodes nothing)."""
    root = tmp_path / "cohort"
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for name in files:
        (root / "videos" / name).touch()
    manifest = root / "manifest.csv"
    manifest.write_text(text)
    return manifest


def _problems(manifest: Path, kind: str) -> list[str]:
    with pytest.raises(ManifestError) as e:
        read_manifest(manifest, kind)
    return str(e.value).splitlines()


def test_a_manifest_is_read_with_paths_resolved_against_its_folder_and_other_columns_listed(tmp_path):
    absolute = tmp_path / "elsewhere.dcm"
    absolute.touch()
    m = _cohort(
        tmp_path,
        " Path ,LABEL,Group,start_frame,end_frame,notes\n"
        "videos/a.avi,38.5,P1,3,20,x\n"
        f"{absolute},61.25,P1,,,\n"
        "\n"
        "videos/b.avi,55,,,,\n",
    )
    ds = read_manifest(m.parent, "regression", strata=tasks.EF_STRATA)  # a folder: its manifest.csv
    assert ds.manifest == m and [r.name for r in ds] == ["videos/a.avi", str(absolute), "videos/b.avi"]
    a, e, b = ds.records
    assert a.path == m.parent / "videos" / "a.avi" and e.path == absolute
    assert (a.label, a.start_frame, a.end_frame, a.group, a.row) == (38.5, 3, 20, "P1", 2)
    assert (e.start_frame, e.end_frame, e.group) == (None, None, "P1")
    assert b.group == "videos/b.avi" and b.row == 5  # its own group; the blank line counts as a row
    assert ds.columns["ignored"] == "'notes'" and ds.columns["path"] == "column ' Path '"
    assert ds.report().splitlines()[0] == (
        f"cohort manifest {m} (regression): 3 of 3 videos read (1 reduced, 2 normal), 0 skipped"
    )


@pytest.mark.parametrize(
    ("kind", "text", "line"),
    [
        (
            "regression",
            "path,EF\nvideos/a.avi,40\n",
            "row 1 (the header): no column 'label'; the manifest needs columns path and label "
            "(found: 'path', 'EF')",
        ),
        (
            "regression",
            "path,label\nvideos/a.avi,40\nvideos/zz.avi,50\n",
            "row 3 (videos/zz.avi): no such file",
        ),
        (
            "regression",
            "path,label\nvideos/a.avi,40\nvideos/b.avi,forty\n",
            "row 3 (videos/b.avi): label 'forty' is not a number (expected EF in percent)",
        ),
        (
            "classification",
            "path,label\nvideos/a.avi,0\nvideos/b.avi,yes\nvideos/c.avi,1\n",
            "row 3 (videos/b.avi): label 'yes' is not a number (expected 1 or 0)",
        ),
        (
            "classification",
            "path,label\nvideos/a.avi,0\nvideos/b.avi,0\nvideos/c.avi,1\n",
            "row 4 (videos/c.avi): the only video of class positive (1); each class needs at least 2 videos "
            "(one to train on, one to test)",
        ),
        (
            "regression",
            "path,label\nvideos/a.avi,40\nvideos/b.avi,50\n./videos/a.avi,41\n",
            "row 4 (./videos/a.avi): the same file as row 2 (a duplicate path)",
        ),
        (
            "classification",
            "path,label\nvideos/a.avi,0\nvideos/b.avi,0\nvideos/c.avi,1\nvideos/d.avi,1\nvideos/e.avi,55.3\n",
            "row 6 (videos/e.avi): label 55.3 is not a class: a classification's labels are 1 or 0 (mixed "
            "tasks: an EF belongs in a regression manifest, task = custom_regression)",
        ),
        (
            "regression",
            "path,label\nvideos/a.avi,40\nvideos/b.avi,1\n",
            "row 3 (videos/b.avi): label 1 is a class label, not an EF in percent (mixed tasks: 1 / 0 labels "
            "belong in a classification manifest, task = custom_classification)",
        ),
        (
            "regression",
            "path,label\nvideos/a.avi,0.42\nvideos/b.avi,0.61\n",
            "row 2 (videos/a.avi): every EF is within 0-1 (min 0.42, max 0.61): these look like fractions, "
            "but EF must be in percent (e.g. 55.3, not 0.553)",
        ),
        (
            "regression",
            "path,label\nvideos/a.avi,140\n",
            "row 2 (videos/a.avi): label 140 is not an EF in percent (0..100)",
        ),
        (
            "regression",
            "path,label,start_frame,end_frame\nvideos/a.avi,40,9,\n",
            "row 2 (videos/a.avi): start_frame and end_frame come together: give both, or neither for the "
            "whole video",
        ),
        (
            "regression",
            "path,label,start_frame,end_frame\nvideos/a.avi,40,9,4\n",
            "row 2 (videos/a.avi): end_frame 4 is not after start_frame 9",
        ),
        (
            "regression",
            "path,label,split\nvideos/a.avi,40,training\n",
            "row 2 (videos/a.avi): split 'training' must be train, val or test",
        ),
        (
            "regression",
            "path,label,fold\nvideos/a.avi,40,-1\n",
            "row 2 (videos/a.avi): fold '-1' must be a whole number >= 0 (0-based)",
        ),
        (
            "regression",
            "path,label,group,fold\nvideos/a.avi,40,P1,0\nvideos/b.avi,50,P1,1\n",
            "row 3 (videos/b.avi): group 'P1' is in fold 1 here but in fold 0 at row 2; a group's videos must "
            "share one fold",
        ),
        (
            "regression",
            "path,label,split,fold\nvideos/a.avi,40,train,0\n",
            "row 1 (the header): both a split and a fold column; keep one",
        ),
    ],
)
def test_each_bad_manifest_is_one_line_naming_its_row(tmp_path, kind, text, line):
    m = _cohort(tmp_path, text)
    problems = _problems(m, kind)
    assert len(problems) == 1 and problems[0].startswith(f"{m} {line}"), problems


def test_every_problem_of_a_manifest_is_listed_one_line_each(tmp_path):
    rows = "".join(f"videos/missing{i}.avi,abc\n" for i in range(30))
    problems = _problems(_cohort(tmp_path, "path,label\nvideos/a.avi,40\n" + rows), "regression")
    # two problems per bad row (its file, its label), the first 20 shown, then the count of the rest
    assert len(problems) == 21
    assert problems[
        0
    ] == f"{tmp_path / 'cohort' / 'manifest.csv'} row 3 (videos/missing0.avi): no such file " + (
        f"({tmp_path / 'cohort' / 'videos' / 'missing0.avi'})"
    )
    assert problems[1].endswith(
        "row 3 (videos/missing0.avi): label 'abc' is not a number (expected EF in percent)"
    )
    assert problems[-1].endswith(": ... and 40 more problems")
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv", "regression")
    with pytest.raises(ManifestError, match="no data rows below the header"):
        read_manifest(_cohort(tmp_path, "path,label\n"), "regression")
    latin = _cohort(tmp_path, "path,label\n")
    latin.write_bytes("path,label\nvideos/é.avi,40\n".encode("latin-1"))  # a spreadsheet's default CSV
    with pytest.raises(
        ManifestError, match=r"manifest.csv: not UTF-8 text \(invalid continuation byte at byte 18\); "
    ):
        read_manifest(latin, "regression")


# --------------------------------------------------------------------------------------------- folds


def _rows(n: int, label, **columns) -> str:
    head = ",".join(["path", "label", *columns])
    body = "".join(
        ",".join([f"videos/v{i:02d}.avi", str(label(i)), *(str(v(i)) for v in columns.values())]) + "\n"
        for i in range(n)
    )
    return head + "\n" + body


def _files(n: int) -> tuple[str, ...]:
    return tuple(f"v{i:02d}.avi" for i in range(n))


def test_folds_come_from_the_fold_column_or_the_split_column(tmp_path):
    m = _cohort(tmp_path, _rows(6, lambda i: 40 + i, fold=lambda i: i % 3), _files(6))
    folds, how = read_manifest(m, "regression").folds("auto")
    assert how == "the manifest's fold column (3 folds)"
    assert [f.test for f in folds] == [("videos/v00.avi", "videos/v03.avi"), ("videos/v01.avi", "videos/v04.avi"),
                                       ("videos/v02.avi", "videos/v05.avi")]  # fmt: skip
    assert folds[0].train == ("videos/v01.avi", "videos/v02.avi", "videos/v04.avi", "videos/v05.avi")
    split = {0: "train", 1: "train", 2: "VAL", 3: "test", 4: "train", 5: "test"}
    m = _cohort(tmp_path, _rows(6, lambda i: 40 + i, split=split.get), _files(6))
    (fold,), how = read_manifest(m, "regression").folds("auto")
    assert how == "the manifest's split column (train 3, val 1, test 2)"
    assert (fold.train, fold.val, fold.test) == (
        ("videos/v00.avi", "videos/v01.avi", "videos/v04.avi"),
        ("videos/v02.avi",),
        ("videos/v03.avi", "videos/v05.avi"),
    )
    gap = _cohort(tmp_path, _rows(4, lambda i: 40 + i, fold=lambda i: 2 * (i % 2)), _files(4))
    with pytest.raises(
        ManifestError, match=r"manifest.csv: fold 1 has no row: the fold numbers must run 0..2$"
    ):
        read_manifest(gap, "regression").folds("auto")
    one = _cohort(tmp_path, _rows(4, lambda i: 40 + i, split=lambda i: "train"), _files(4))
    with pytest.raises(ManifestError, match=r"manifest.csv: no row has split = test$"):
        read_manifest(one, "regression").folds("auto")


def test_seeded_stratified_folds_balance_classes_or_ef_categories_and_keep_groups_whole(tmp_path):
    m = _cohort(tmp_path, _rows(12, lambda i: int(i < 4), group=lambda i: f"P{i // 2}"), _files(12))
    ds = read_manifest(m, "classification")
    folds, how = ds.folds("auto", n_folds=2, seed=3)
    assert how == "seeded stratified folds by class (2 folds, data.fold_seed = 3, 6 groups kept whole)"
    assert ds.folds("stratified", n_folds=2, seed=3)[0] == folds  # the same without a fold column
    labels = {r.name: r.label for r in ds}
    for f in folds:
        assert sorted(labels[n] for n in f.test) == [0, 0, 0, 0, 1, 1]  # 4 positives: 2 per fold
        assert all(f"videos/v{2 * (int(n[8:10]) // 2):02d}.avi" in f.test for n in f.test)  # pairs whole
    assert ds.folds("auto", n_folds=2, seed=4)[0] != folds  # the seed chooses
    # regression: by EF category (3 reduced, 3 mildly reduced, 6 normal over 3 folds: 1, 1, 2 each)
    efs = [30, 35, 38, 42, 45, 48, 55, 60, 62, 65, 70, 75]
    m = _cohort(tmp_path, _rows(12, lambda i: efs[i], fold=lambda i: i % 2), _files(12))
    ds = read_manifest(m, "regression", strata=tasks.EF_STRATA)
    folds, how = ds.folds("stratified", n_folds=3, seed=0)
    assert how.endswith("(3 folds, data.fold_seed = 0) (the manifest's fold / split column is not used)")
    for f in folds:
        cats = sorted(ds.stratum(ds[n].label) for n in f.test)
        assert cats == ["mildly_reduced", "normal", "normal", "reduced"]
    with pytest.raises(ManifestError, match="12 videos cannot fill data.n_folds = 13 folds"):
        ds.folds("stratified", n_folds=13)
    with pytest.raises(ConfigError, match="data.folds must be one of"):
        ds.folds("official")


# ------------------------------------------------------------------------------- configs and records


def test_the_cohort_configs_pass_the_check_and_their_own_fields_are_checked():
    for c in (custom_demo.get_config(v) for v in ("", *custom_demo.VARIANTS)):
        config_check.check_config(c)
    assert custom.get_config("classification").task == "custom_classification"
    assert custom_demo.get_config("classification_quick").task == "custom_classification"
    c = custom.get_config()
    assert c.task == "custom_regression" and c.data.frames == 36 and c.eval.interval_level == 0.9
    c.data.crop = "box"
    c.data.folds = "shipped"
    c.eval.interval_level = 90
    with pytest.raises(ConfigError) as e:
        config_check.check_config(c)
    assert str(e.value).splitlines() == [
        "data.crop = 'box': must be one of 'auto', 'region', 'sector', 'none'",
        "eval.interval_level = 90.0: must be in (0, 1), e.g. 0.9: 90 % intervals",
        "data.manifest is empty: pass --config.data.manifest=<your manifest CSV> (path, label, ...)",
        "data.folds = 'shipped': must be one of ('auto', 'stratified')",
    ]
    demo = custom_demo.get_config("quick")
    demo.data.manifest = "mine.csv"
    assert config_check.config_problems(demo) == [
        "data.manifest = 'mine.csv' with data.synthetic.enabled = True: the synthetic demo writes and reads its "
        "own manifest; drop one of them"
    ]
    assert config_check.CROP_MODES == video_io.CROP_MODES  # written twice: the check imports no data code
    with pytest.raises(ConfigError, match=r"--config=custom:ef: unknown variant"):
        custom.get_config("ef")


def test_an_empty_manifest_field_is_named_when_the_data_is_prepared(tmp_path):
    c = custom.get_config()
    with pytest.raises(ConfigError, match=r"^data.manifest is empty: pass --config.data.manifest=<the "
                       r"custom_regression manifest CSV>$"):  # fmt: skip
        transfer_sets.prepare("custom_regression", c.data, tmp_path)
    assert (
        tasks.get("custom_regression") is tasks.CUSTOM_REGRESSION
        and tasks.CUSTOM_REGRESSION.kind.name == "regression"
    )
    assert tasks.get("custom_classification") is tasks.CUSTOM_CLASSIFICATION
    assert tasks.CUSTOM_CLASSIFICATION.classes == ("positive (1)", "negative (0)")


# ------------------------------------------------------------------------------------ the demo cohort


def test_the_synthetic_cohorts_are_written_once_and_read_back(tmp_path):
    reg = write_manifest_dataset(tmp_path / "reg", n_videos=6, seed=1, size=32, min_frames=12, max_frames=14)
    ds = read_manifest(reg, "regression")
    assert len(ds) == 6 and sum(r.start_frame is not None for r in ds) == 3  # half the rows: a cycle
    assert all(0 <= r.start_frame < r.end_frame < 14 for r in ds if r.start_frame is not None)
    assert "fold" not in ds.columns and all(10 <= r.label <= 85 for r in ds)
    stamp = (reg / "manifest.csv").stat().st_mtime_ns
    write_manifest_dataset(tmp_path / "reg", n_videos=6, seed=1, size=32, min_frames=12, max_frames=14)
    assert (reg / "manifest.csv").stat().st_mtime_ns == stamp  # the same config: nothing rewritten
    cls = write_manifest_dataset(
        tmp_path / "cls", kind="classification", n_videos=8, seed=1, size=32, n_folds=2
    )
    ds = read_manifest(cls, "classification")
    folds, how = ds.folds("auto")
    assert how == "the manifest's fold column (2 folds)"
    assert sorted(r.label for r in ds) == [0] * 4 + [1] * 4
    assert all(sorted(ds[n].label for n in f.test) == [0, 0, 1, 1] for f in folds)
    assert all(r.start_frame is not None for r in ds)


def test_each_row_becomes_one_clip_of_its_cycle_or_of_the_whole_video(tmp_path):
    root = write_manifest_dataset(tmp_path / "reg", n_videos=6, seed=1, size=32, min_frames=12, max_frames=14)
    c = custom.get_config()
    c.data.manifest = str(root / "manifest.csv")
    c.data.frames, c.data.image_size, c.data.n_folds = 8, 32, 2
    data = transfer_sets.prepare("custom_regression", c.data, tmp_path / "work", progress=False)
    ds = read_manifest(root, "regression")
    spec = transfer_sets.cycle_spec(c.data)
    for i, name in enumerate(data.names):
        r = ds[name]
        video = video_io.load_echo_video(r.path, size=None, crop="auto", channels=3).frames
        cycle = video if r.start_frame is None else video[r.start_frame : r.end_frame + 1]
        np.testing.assert_array_equal(data.clips[i], cycles.cycle_to_clip(cycle, spec))
        assert data.source_frames[i] == len(cycle) and data.labels[i] == np.float32(r.label)
    report = json.loads((tmp_path / "work" / transfer_sets.REPORT_FILE).read_text())
    assert report["columns"]["folds"].startswith("seeded stratified folds by EF category")


def test_a_cycle_beyond_its_video_is_left_out_and_listed_or_raised(tmp_path):
    root = write_manifest_dataset(tmp_path / "reg", n_videos=6, seed=1, size=32, min_frames=12, max_frames=14)
    lines = (root / "manifest.csv").read_text().splitlines()
    lines[1] = ",".join(lines[1].split(",")[:2] + ["5", "99"])
    mine = tmp_path / "mine.csv"
    mine.write_text("\n".join(line.replace("videos/", "reg/videos/") for line in lines) + "\n")
    c = custom.get_config()
    c.data.manifest = str(mine)
    c.data.frames, c.data.image_size, c.data.n_folds = 8, 32, 2
    data = transfer_sets.prepare("custom_regression", c.data, tmp_path / "work", progress=False)
    assert len(data.names) == 5 and [s.name for s in data.skipped] == ["reg/videos/v0001.avi"]
    reason = data.skipped[0].reason
    assert reason.startswith(
        "row 2 (reg/videos/v0001.avi): the cycle 5..99 (0-based) lies outside the video's"
    )
    c.data.on_error = "raise"
    with pytest.raises(ManifestError, match=r"row 2 \(reg/videos/v0001.avi\): the cycle 5..99"):
        transfer_sets.prepare("custom_regression", c.data, tmp_path / "work2", progress=False)


# ------------------------------------------------------------------------------------------ intervals


def _fold(k: int, labels, outputs, val=None) -> dict:
    pred = [
        {"name": f"f{k}v{i}", "label": y, "output": o, "group": "g"}
        for i, (y, o) in enumerate(zip(labels, outputs))
    ]
    result = {"fold": k, "sizes": {"val": len(val or [])}, "predictions": pred}
    if val is not None:
        result["val_predictions"] = [
            {"name": f"f{k}w{i}", "label": y, "output": o} for i, (y, o) in enumerate(val)
        ]
    return result


def test_intervals_are_fitted_on_the_fold_s_validation_videos_when_it_has_them():
    # 9 validation videos predicted normal with errors 1..9: at 90 % the quantile is the 9th smallest, 9
    val = [(60.0 + e, 60.0) for e in range(1, 10)]
    result = _fold(0, [61.0, 75.0, 30.0], [62.0, 62.0, 35.0], val)
    out = intervals.cross_validated([result], 0.9)
    assert out.bounds["f0v0"] == (53.0, 71.0) and out.bounds["f0v1"] == (53.0, 71.0)
    assert out.bounds["f0v2"] == (0.0, 100.0)  # predicted reduced: no calibration video there
    s = out.summary
    assert s["fitted_on"] == "fitted on the fold's validation videos" and s["unbounded"] == 1
    assert s["per_fold"] == [
        {
            "fold": 0,
            "fitted_on": "fitted on the fold's validation videos",
            "calibration_videos": {"reduced": 0, "mildly_reduced": 0, "normal": 9},
            "quantiles": {"reduced": None, "mildly_reduced": None, "normal": 9.0},
        }
    ]
    assert s["interval_coverage"] == pytest.approx(2 / 3) and s["interval_n"] == 3
    assert s["interval_mean_width"] == pytest.approx((18 + 18 + 100) / 3)
    assert s["interval_infinite_bins"] == ["reduced", "mildly_reduced"]
    assert out.line() == (
        "90 % EF intervals (split conformal per predicted EF category, fitted on the fold's validation "
        "videos): coverage 0.67, mean width 45.3 EF points over 3 tested videos; 1 of them [0, 100], "
        "predicted in a category with too few calibration videos (reduced, mildly_reduced)."
    )


def test_without_validation_videos_each_fold_is_cross_fitted_on_the_other_folds():
    rng = np.random.default_rng(0)
    folds = []
    for k in range(3):
        y = rng.uniform(60, 70, 10)  # every prediction normal (>= 50): one category holds all
        folds.append(_fold(k, list(y), list(y + rng.normal(0, 2, 10))))
    out = intervals.cross_validated(folds, 0.8)
    for k, f in enumerate(folds):
        others = np.array(
            [abs(p["label"] - p["output"]) for g in folds if g is not f for p in g["predictions"]]
        )
        q = conformal.conformal_quantile(others, 0.8)  # spread 0: the score is |error| / 1
        assert out.summary["per_fold"][k]["quantiles"]["normal"] == pytest.approx(q)
        for p in f["predictions"]:
            assert out.bounds[p["name"]] == pytest.approx((p["output"] - q, p["output"] + q))
    assert out.summary["fitted_on"] == "cross-fitted on the other folds' tested videos"
    one = intervals.cross_validated(folds[:1], 0.9)
    assert one.bounds == {} and one.summary["without_interval"] == 10
    assert (
        one.line()
        == "No 90 % EF intervals: fold 0: the fold has no validation videos and no other fold was run."
    )
    # a fold with a validation set whose result predates val_predictions is cross-fitted, and says so
    old = dict(folds[0], sizes={"val": 4})
    assert intervals.cross_validated([old], 0.9).summary["why_none"] == (
        "fold 0: its result records no validation predictions (written before intervals) and no other fold was run"
    )


def test_the_intervals_cover_at_their_level_on_exchangeable_residuals():
    rng = np.random.default_rng(1)
    hits = []
    for _ in range(200):
        val = [(60 + e, 60.0) for e in rng.normal(0, 5, 19)]
        test_y = 60 + rng.normal(0, 5, 50)
        out = intervals.cross_validated([_fold(0, list(test_y), [60.0] * 50, val)], 0.9)
        hits.append(out.summary["interval_coverage"])
    # split conformal with n = 19: the mean coverage is (ceil(20 * 0.9)) / 20 = 0.9 exactly in expectation
    assert np.mean(hits) == pytest.approx(0.9, abs=0.01)


# -------------------------------------------------------------------- the loop with training stubbed


def _stub(self):
    """FoldRun.train_and_test without training: test output = label + 1 + row % 3, validation label + 2."""
    rows = lambda idx: [(self.data.names[i], float(self.data.labels[i]), i) for i in idx]
    return {
        "fold": self.fold.index,
        "sizes": {"train": len(self.fold.train), "val": len(self.fold.val), "test": len(self.fold.test)},
        "init": "stub",
        "tested_epoch": 0,
        "epoch_chosen_on": "stub",
        "history": [],
        "seconds": 0.0,
        "predictions": [
            {"name": n, "label": y, "output": y + 1.0 + i % 3, "group": self.data.groups[i]}
            for n, y, i in rows(self.test_rows)
        ],
        "val_predictions": [{"name": n, "label": y, "output": y + 2.0} for n, y, i in rows(self.val_rows)],
        "inputs": self.inputs,
    }


def _demo_root(tmp_path: Path) -> Path:
    return write_manifest_dataset(
        tmp_path / "reg", n_videos=12, seed=2, size=32, min_frames=12, max_frames=14
    )


def _config(manifest: Path, kind: str = "regression"):
    c = custom_demo.get_config("quick" if kind == "regression" else "classification_quick")
    c.data.synthetic.enabled = False
    c.data.manifest = str(manifest)
    c.transfer.mode = "finetune"
    return c


def test_a_split_manifest_reports_intervals_fitted_on_its_validation_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(loop.FoldRun, "train_and_test", _stub)
    root = _demo_root(tmp_path)
    rows = list(csv.DictReader((root / "manifest.csv").open()))
    split = ["train"] * 4 + ["val"] * 4 + ["test"] * 4
    with open(root / "split.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows([r["path"], r["label"], s] for r, s in zip(rows, split))
    work = tmp_path / "work"
    summary = loop.run_transfer(_config(root / "split.csv"), work)
    assert summary["task"] == "custom_regression" and summary["folds"] == [0]
    assert (
        summary["protocol"]
        == "1 fold: the manifest's split column (train / val / test), whose test rows are reported"
    )
    s = summary["intervals"]
    assert s["fitted_on"] == "fitted on the fold's validation videos"
    # every validation error is 2: the normal category's quantile is 2 when it holds >= 9 videos, else none
    normal = s["per_fold"][0]["calibration_videos"]["normal"]
    assert s["per_fold"][0]["quantiles"]["normal"] == (2.0 if normal >= 9 else None)
    table = (work / "table.md").read_text()
    assert (
        "EF intervals (split conformal per predicted EF category, fitted on the fold's validation videos)"
        in table
    )
    assert table.splitlines()[:2] == [
        "| Setting | r | MAE | RMSE | MAE EF < 40 | MAE EF 40-49 | MAE EF >= 50 |",
        "|---|---|---|---|---|---|---|",
    ]
    assert "Your own cohort: no published rows" in table
    predictions = list(csv.DictReader((work / "predictions.csv").open()))
    assert [p["name"] for p in predictions] == [r["path"] for r in rows[8:]]
    assert all(float(p["lower"]) <= float(p["output"]) <= float(p["upper"]) for p in predictions)
    assert (work / "custom_regression_scatter.png").is_file()
    saved = json.loads((work / "results.json").read_text())
    assert saved["intervals"]["interval_n"] == 4 and "val_predictions" not in saved["per_fold"][0]


def test_a_classification_cohort_has_no_intervals_and_its_stratified_folds_hold_both_classes(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(loop.FoldRun, "train_and_test", _stub)
    root = write_manifest_dataset(
        tmp_path / "cls", kind="classification", n_videos=8, seed=1, size=32, n_folds=2
    )
    c = _config(root / "manifest.csv", "classification")
    c.data.folds = "stratified"  # not the manifest's fold column: data.n_folds of them
    c.data.n_folds = 4
    c.transfer.folds = ""
    work = tmp_path / "work"
    summary = loop.run_transfer(c, work)
    assert summary["folds"] == [0, 1, 2, 3] and "intervals" not in summary
    assert summary["protocol"].startswith(
        "4-fold cross-validation (data.folds = 'stratified': seeded stratified"
    )
    header = next(csv.reader((work / "predictions.csv").open()))
    assert header == ["fold", "name", "group", "label", "output"]
    report = json.loads((work / transfer_sets.REPORT_FILE).read_text())
    assert report["groups"] == {"negative (0)": 4, "positive (1)": 4}
    assert report["columns"]["folds"].startswith("seeded stratified folds by class (4 folds")
    table = (work / "table.md").read_text()
    assert table.splitlines()[0] == "| Setting | Sens. | Spec. | Prec. | F1 | Acc. | AUROC |"
    assert "EF intervals" not in table and "| majority-class baseline |" in table


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_the_quick_cohort_demo_runs_end_to_end_from_the_command_line(tmp_path):
    """What .ci/run's test command runs of item 5: main.py on the synthetic demo manifest, both folds."""
    done = run_main(
        "--config=configs/custom_demo.py:quick", f"--workdir={tmp_path}", "--config.transfer.mode=finetune"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("results.json", "table.md", "predictions.csv", "preparation_report.json",
                 "custom_regression_scatter.png", "custom_regression_bland_altman.png"):  # fmt: skip
        assert (tmp_path / name).is_file(), name
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["task"] == "custom_regression" and summary["folds"] == [0, 1]
    assert summary["intervals"]["fitted_on"] == "cross-fitted on the other folds' tested videos"
    predictions = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert len(predictions) == 20 and all(p["lower"] and p["upper"] for p in predictions)
    assert "EF intervals" in done.stdout and "| ours: fine-tuning, scratch |" in done.stdout


@pytest.mark.slow
def test_tiny_cohorts_are_probed_and_fine_tuned(tmp_path):
    """A regression cohort with a split column probed (its epoch and its intervals from the validation
    rows), a classification cohort of the demo fine-tuned on fold 0 of its fold column."""
    root = _demo_root(tmp_path)
    rows = list(csv.DictReader((root / "manifest.csv").open()))
    with open(root / "split.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "start_frame", "end_frame"])
        split = ["train"] * 4 + ["val"] * 4 + ["test"] * 4
        w.writerows([r["path"], r["label"], s, r["start_frame"], r["end_frame"]] for r, s in zip(rows, split))
    c = _config(root / "split.csv")
    c.transfer.mode = "probe"
    c.transfer.probe_random_encoder = True
    summary = cli.run("train", c, str(tmp_path / "probe"))
    fold = json.loads((tmp_path / "probe" / "folds" / "fold0" / "result.json").read_text())
    assert fold["epoch_chosen_on"] == "validation set" and len(fold["val_predictions"]) == 4
    assert [p["name"] for p in fold["val_predictions"]] == [r["path"] for r in rows[4:8]]
    assert summary["intervals"]["fitted_on"] == "fitted on the fold's validation videos"
    assert summary["intervals"]["interval_n"] == 4 and math.isfinite(summary["summary"]["all/mae"]["mean"])
    c = custom_demo.get_config("classification_quick")
    c.transfer.mode = "finetune"
    summary = cli.run("train", c, str(tmp_path / "finetune"))
    assert summary["task"] == "custom_classification" and summary["folds"] == [0]
    fold = json.loads((tmp_path / "finetune" / "folds" / "fold0" / "result.json").read_text())
    outputs = np.array([p["output"] for p in fold["predictions"]])
    assert len(outputs) == 4 and np.all((outputs > 0) & (outputs < 1))  # probabilities of class 1
    assert fold["val_predictions"] == [] and "intervals" not in summary
