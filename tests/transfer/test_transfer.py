"""Transfer learning (CAMUS, HMC-QU): configs, preparation, the tables, and the loop end to end."""

import csv
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import ClassVar

import chex
import jax
import numpy as np
import pytest

from configs import camus, camus_demo, hmcqu, hmcqu_demo
from coreecho_jax import cli, config_check, logs
from coreecho_jax.checkpoints import manager as ckpt_lib
from coreecho_jax.data.records import NamedRecords
from coreecho_jax.data.synthetic.camus import write_camus_dataset
from coreecho_jax.data.transfer.camus import CamusError
from coreecho_jax.data.transfer.folds import Fold
from coreecho_jax.errors import ConfigError, DataError
from coreecho_jax.evaluation import transfer as transfer_eval
from coreecho_jax.models import build_model
from coreecho_jax.train import steps as train_steps
from coreecho_jax.train import workdir as workdir_lib
from coreecho_jax.transfer import data as transfer_sets
from coreecho_jax.transfer import loop, provenance, report, tasks
from coreecho_jax.transfer import steps as transfer_steps

# ---------------------------------------------------------------------------------------- configs


def test_the_transfer_configs_pass_the_check_and_bad_fields_are_named_one_per_line():
    for c in (
        camus.get_config(),
        hmcqu.get_config(),
        camus_demo.get_config("quick"),
        hmcqu_demo.get_config(),
    ):
        config_check.check_config(c)
    c = camus.get_config()
    c.transfer.mode = "linear"
    c.data.frames = 15
    c.data.folds = "shipped"  # an HMC-QU scheme
    c.probe.batch_size = 1
    with pytest.raises(ConfigError) as e:
        config_check.check_config(c)
    lines = str(e.value).splitlines()
    assert any(line.startswith("transfer.mode = 'linear'") for line in lines)
    assert any(line.startswith("data.frames = 15: must be an even integer") for line in lines)
    assert any(line.startswith("data.folds = 'shipped'") for line in lines)
    assert any(line.startswith("probe.batch_size = 1") for line in lines)
    assert len(lines) == 4


def test_fold_subsets_are_parsed_and_checked():
    assert loop.parse_folds("", 5) == [0, 1, 2, 3, 4]
    assert loop.parse_folds("3, 0", 10) == [0, 3]
    for bad in ("10", "a", "-1", ","):
        with pytest.raises(ConfigError, match="transfer.folds"):
            loop.parse_folds(bad, 10)


def test_other_modes_are_refused_for_transfer_configs(tmp_path):
    with pytest.raises(ConfigError, match="evaluate is not available for a transfer config"):
        cli.run("evaluate", camus_demo.get_config("quick"), str(tmp_path))


def test_the_architecture_comes_from_the_run_that_transfer_init_names(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": {"preset": "tiny", "dims": None}}))
    c = camus.get_config()
    c.transfer.init = str(tmp_path)
    assert loop.model_config(c).preset == "tiny"
    assert camus.get_config().model.preset == "small"


# ------------------------------------------------------------------------------------------ tables


def test_regression_metrics_per_quality_group_against_hand_values():
    y = np.array([50.0, 60.0, 40.0, 30.0, 70.0])
    p = np.array([52.0, 57.0, 40.0, 35.0, 69.0])
    g = ["Good", "Medium", "Poor", "Poor", "Good"]
    m = transfer_eval.regression_metrics(y, p, g)
    assert m["good_medium/n"] == 3 and m["poor/n"] == 2 and m["all/n"] == 5
    assert m["good_medium/mae"] == pytest.approx((2 + 3 + 1) / 3)
    assert m["poor/mae"] == pytest.approx(2.5)
    assert m["good_medium/corr"] == pytest.approx(np.corrcoef(y[[0, 1, 4]], p[[0, 1, 4]])[0, 1])
    assert m["all/corr"] == pytest.approx(np.corrcoef(y, p)[0, 1])
    # two Poor patients always correlate +-1: undefined, and the note says why
    assert math.isnan(m["poor/corr"])
    assert m["notes"] == {"poor/corr": "2 patient(s): a correlation needs at least 3"}
    one = transfer_eval.regression_metrics(y[:1], p[:1], ["Poor"])
    assert math.isnan(one["poor/corr"]) and math.isnan(one["good_medium/mae"])
    assert one["notes"]["good_medium/mae"] == "no patient of this group"
    assert transfer_eval.MIN_CORR_PATIENTS == 3


def test_a_two_patient_correlation_no_longer_enters_the_fold_mean():
    falling = transfer_eval.regression_metrics([40.0, 30.0], [40.0, 35.0], ["Poor", "Poor"])
    rising = transfer_eval.regression_metrics([30.0, 40.0, 50.0], [35.0, 38.0, 37.0], ["Poor"] * 3)
    s = report.summarize_folds([falling, rising])
    assert s["poor/corr"]["folds"] == 1
    assert s["poor/corr"]["mean"] == pytest.approx(np.corrcoef([30, 40, 50], [35, 38, 37])[0, 1])
    assert "notes" not in s


def test_classification_counts_an_empty_denominator_as_zero_as_reference_21_and_marks_it():
    # no video predicted MI: precision 0/0 -> 0 (torchmetrics 0.6.1, as [21]); F1 has 2tp + fp + fn = 1
    y = np.array([1, 0, 0, 0])
    prob = np.array([0.4, 0.1, 0.2, 0.3])
    m = transfer_eval.classification_metrics(y, prob, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (0, 0, 3, 1)
    assert m["precision"] == 0.0 and m["sensitivity"] == 0.0 and m["f1"] == 0.0
    assert m["specificity"] == 100.0 and m["accuracy"] == 75.0 and m["auroc"] == 1.0
    assert m["notes"] == {"precision": "0/0 (no video predicted MI): counted as 0, as [21]"}
    # a fold with one class (all normal, none predicted): sensitivity and F1 are 0/0, AUROC undefined
    m = transfer_eval.classification_metrics(np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.5)
    assert m["sensitivity"] == m["precision"] == m["f1"] == 0.0 and m["specificity"] == 100.0
    assert set(m["notes"]) == {"sensitivity", "precision", "f1", "auroc"}
    assert (
        math.isnan(m["auroc"]) and m["notes"]["auroc"] == "undefined: only normal videos among the 3 tested"
    )
    # the fold mean counts the 0 and says in how many folds it was a 0/0
    good = transfer_eval.classification_metrics(np.array([1, 0]), np.array([0.9, 0.1]), 0.5)
    s = report.summarize_folds([good, transfer_eval.classification_metrics(y, prob, 0.5)])
    assert s["precision"] == {
        "mean": 50.0,
        "std": pytest.approx(100 / np.sqrt(2)),
        "folds": 2,
        "counted_as_zero": 1,
    }
    assert s["auroc"] == {"mean": 1.0, "std": 0.0, "folds": 2}
    table = report.format_table("hmcqu", {"ours": s}, 2)
    assert "| 50.00 ± 70.71 (0/0 = 0 in 1/2 folds) |" in table


def test_mi_is_a_probability_above_the_threshold_as_reference_21_rounds_it():
    # [21]: torch.round(torch.sigmoid(logit)) rounds half to even, so 0.5 is normal
    prob = np.array([0.5, 0.5000001, 0.4999999])
    np.testing.assert_array_equal(transfer_eval.predict_mi(prob, 0.5), [0, 1, 0])
    np.testing.assert_array_equal(transfer_eval.predict_mi(prob, 0.5, inclusive=True), [1, 1, 0])
    m = transfer_eval.classification_metrics(np.array([1, 1, 0]), prob, 0.5)
    assert (m["tp"], m["fn"]) == (1, 1)
    assert transfer_eval.classification_metrics(np.array([1, 1, 0]), prob, 0.5, inclusive=True)["tp"] == 2
    assert camus.get_config().eval.threshold_inclusive is False


def test_classification_metrics_and_the_majority_baseline():
    y = np.array([1, 1, 1, 0, 0])
    prob = np.array([0.9, 0.6, 0.2, 0.4, 0.7])
    m = transfer_eval.classification_metrics(y, prob, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 1)
    assert m["sensitivity"] == pytest.approx(200 / 3)
    assert m["specificity"] == pytest.approx(50.0)
    assert m["accuracy"] == pytest.approx(60.0)
    assert m["auroc"] == pytest.approx(3 / 6)  # 3 of the 6 (MI, normal) pairs ranked right
    f = tasks.get("hmcqu").evaluator().fold(y, prob, ["MI"] * 5, np.array([1, 1, 0]))
    assert f["majority_class"] == 1 and f["baseline"]["sensitivity"] == 100.0
    assert f["baseline"]["specificity"] == 0.0


def test_fold_summary_is_mean_and_sample_std_over_the_folds_where_defined():
    folds = [{"a": 1.0, "b": float("nan")}, {"a": 3.0, "b": 2.0}, {"a": 5.0, "b": 4.0}]
    s = report.summarize_folds(folds)
    assert s["a"] == {"mean": 3.0, "std": 2.0, "folds": 3}
    assert s["b"]["mean"] == 3.0 and s["b"]["folds"] == 2
    table = report.format_table("camus", {"ours": {"poor/corr": {"mean": 0.5, "std": 0.1, "folds": 2}}}, 3)
    assert "| ours | - | - | 0.500 ± 0.100 (2/3 folds) |" in table
    pooled = report.as_row({"poor/corr": 0.25, "poor/mae": math.nan, "notes": {"poor/mae": "x"}}, 3)
    table = report.format_table("camus", {"ours, pooled": pooled}, 3)
    assert "| ours, pooled | - | - | 0.250 | - | - | - |" in table
    assert "| paper: Fine-tuning, CoReEcho | 0.807 | 5.29 | 0.693 | 6.81 | - | - |" in table


# ------------------------------------------------------------------------------------- preparation


def _camus_config(root: Path):
    c = camus_demo.get_config("quick")
    c.data.synthetic.enabled = False
    c.data.root = str(root)
    return c


def test_preparation_is_cached_keyed_on_the_files_and_lists_unreadable_patients(tmp_path):
    root = write_camus_dataset(tmp_path / "camus", n_patients=12, seed=3, size=32, release="2019")
    c = _camus_config(root)
    work = tmp_path / "work"
    first = transfer_sets.prepare("camus", c.data, work, progress=False)
    chex.assert_shape(first.clips, (12, 8, 32, 32))
    assert first.clips.dtype == np.uint8 and len(first.folds) == 10
    cached = sorted((work / "prepared").glob("*.npz"))
    again = transfer_sets.prepare("camus", c.data, work, progress=False)
    np.testing.assert_array_equal(again.clips, first.clips)
    assert sorted((work / "prepared").glob("*.npz")) == cached  # read, not prepared again
    # a truncated pixel file: the header reads, the pixels do not; the patient is left out and listed
    raw = next((root / "training" / "patient0004").glob("*_4CH_sequence.raw"))
    raw.write_bytes(raw.read_bytes()[:100])
    damaged = transfer_sets.prepare("camus", c.data, work, progress=False)
    assert len(sorted((work / "prepared").glob("*.npz"))) == 2  # the changed file made a new key
    assert "patient0004" not in damaged.names and len(damaged.names) == 11
    assert [s.name for s in damaged.skipped] == ["patient0004"]
    assert all("patient0004" not in f.train + f.test for f in damaged.folds)
    rep = json.loads((work / transfer_sets.REPORT_FILE).read_text())
    assert (
        rep["skipped"][0]["name"] == "patient0004"
        and str(raw.with_suffix(".mhd")) in rep["skipped"][0]["reason"]
    )
    c.data.on_error = "raise"
    with pytest.raises(CamusError, match=str(raw.with_suffix(".mhd"))):
        transfer_sets.prepare("camus", c.data, tmp_path / "work2", progress=False)


def test_an_empty_root_is_a_config_error(tmp_path):
    c = camus.get_config()
    with pytest.raises(ConfigError, match="data.root is empty"):
        transfer_sets.prepare("camus", c.data, tmp_path)


# --------------------------------------------------------------------------------------- end to end


def _fold_state(workdir: Path, fold: int, mode: str, config) -> dict:
    """The model state of a fold's last epoch (read with a template of the loop's own structure)."""
    model = build_model(loop.model_config(config), seed=0)
    if config.task == "hmcqu":
        transfer_steps.fresh_head(
            model, "classification", seed=0, dropout=0.4, bias_init=None, dropout_rng="hash"
        )
    optimizer = train_steps.make_optimizer(model, 1e-3, 1e-4, transfer_steps.optimizer_params(mode))
    template = {"model": ckpt_lib.model_state_dict(model), "opt": ckpt_lib.optimizer_state_dict(optimizer)}
    ckpts = ckpt_lib.RunCheckpoints(workdir / "folds" / f"fold{fold}" / "checkpoints", read_only=True)
    try:
        state, _ = ckpts.restore_latest(template)
    finally:
        ckpts.close()
    return state["model"]


@pytest.mark.slow
def test_camus_probing_freezes_the_encoder_and_trains_a_fresh_head(tmp_path):
    c = camus_demo.get_config("quick")
    c.transfer.probe_random_encoder = True  # a random encoder on purpose: the test checks it stays put
    summary = cli.run("train", c, str(tmp_path))  # what main.py calls
    assert summary["folds"] == [0] and summary["task"] == "camus"
    assert set(summary["summary"]) >= {"good_medium/corr", "good_medium/mae", "poor/mae", "all/mae"}
    for name in (
        "results.json",
        "table.md",
        "predictions.csv",
        "preparation_report.json",
        "camus_scatter.png",
    ):
        assert (tmp_path / name).is_file(), name
    fold = json.loads((tmp_path / "folds" / "fold0" / "result.json").read_text())
    assert fold["epoch_chosen_on"].startswith("fixed epoch count") and fold["tested_epoch"] == 2  # of 2
    assert len(fold["predictions"]) == fold["sizes"]["test"] == 2
    # the result records what it was computed from; the fold's start wrote the same record first
    assert fold["inputs"]["test"] == [p["name"] for p in fold["predictions"]]
    assert len(fold["inputs"]["train"]) == 18 and len(fold["inputs"]["videos"]) == 20
    assert json.loads((tmp_path / "folds" / "fold0" / "inputs.json").read_text()) == fold["inputs"]
    # the encoder (parameters and BatchNorm statistics) is the one it started from, bit for bit
    trained = _fold_state(tmp_path, 0, "probe", c)
    start = ckpt_lib.model_state_dict(build_model(loop.model_config(c), seed=0))
    chex.assert_trees_all_equal(trained["encoder"], start["encoder"])
    assert not np.array_equal(
        np.asarray(trained["head"]["fc2"]["kernel"]), np.asarray(start["head"]["fc2"]["kernel"])
    )
    assert not np.array_equal(np.asarray(trained["head"]["norm1"]["mean"]), np.zeros(128))  # head BN trained


@pytest.mark.slow
def test_hmcqu_fine_tuning_resumes_inside_a_fold_to_the_same_result_and_keeps_finished_folds(
    tmp_path, monkeypatch
):
    c = hmcqu_demo.get_config("quick")
    c.transfer.mode = "finetune"
    c.data.root = str(tmp_path / "hmcqu")  # one synthetic download for both workdirs
    whole = loop.run_transfer(c, tmp_path / "whole")
    assert list(whole["summary"]) == [
        "n", "tp", "fp", "tn", "fn", "sensitivity", "specificity", "precision", "f1", "accuracy", "auroc"
    ]  # fmt: skip
    assert (
        "| Setting | Sens. | Spec. | Prec. | F1 | Acc. | AUROC |"
        in (tmp_path / "whole" / "table.md").read_text()
    )
    a = json.loads((tmp_path / "whole" / "folds" / "fold0" / "result.json").read_text())
    outputs = np.array([p["output"] for p in a["predictions"]])
    assert np.all((outputs > 0) & (outputs < 1))  # MI probabilities
    assert {p["group"] for p in a["predictions"]} <= {"MI", "normal"}

    saves = {"n": 0}
    original = ckpt_lib.RunCheckpoints.save_latest

    def save_then_die(self, step, state, meta):
        original(self, step, state, meta)
        saves["n"] += 1
        self.wait()
        raise KeyboardInterrupt("killed after the first epoch")

    monkeypatch.setattr(ckpt_lib.RunCheckpoints, "save_latest", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.run_transfer(c, tmp_path / "resumed")
    monkeypatch.setattr(ckpt_lib.RunCheckpoints, "save_latest", original)
    assert saves["n"] == 1
    resumed = loop.run_transfer(c, tmp_path / "resumed")
    b = json.loads((tmp_path / "resumed" / "folds" / "fold0" / "result.json").read_text())
    assert [p["output"] for p in a["predictions"]] == [p["output"] for p in b["predictions"]]
    assert a["history"] == b["history"] and len(a["history"]) == 2
    assert resumed["summary"] == whole["summary"]
    # fine-tuning moved the encoder
    trained = _fold_state(tmp_path / "whole", 0, "finetune", c)
    start = ckpt_lib.model_state_dict(build_model(loop.model_config(c), seed=0))
    assert not np.array_equal(
        np.asarray(jax.tree.leaves(trained["encoder"])[0]), np.asarray(jax.tree.leaves(start["encoder"])[0])
    )
    # a finished fold is read, not rerun; another fold joins the same workdir
    done = tmp_path / "resumed" / "folds" / "fold0" / "result.json"
    stamp = os.stat(done).st_mtime_ns
    c.transfer.folds = "0,1"
    both = loop.run_transfer(c, tmp_path / "resumed")
    assert os.stat(done).st_mtime_ns == stamp and both["folds"] == [0, 1]
    assert (tmp_path / "resumed" / "folds" / "fold1" / "result.json").is_file()


def test_data_mode_prepares_the_transfer_clips_and_says_what_was_read(tmp_path, capsys):
    out = cli.run("data", camus_demo.get_config("quick"), str(tmp_path))
    assert out == {"videos": 20, "folds": 10}
    printed = capsys.readouterr().out
    assert "20 of 20 patients read" in printed and "(18, 0, 2)" in printed
    assert (tmp_path / transfer_sets.REPORT_FILE).is_file()


# ---------------------------------------------------------------- settings that are no row of the paper


def test_probing_a_random_encoder_is_refused_in_one_line_unless_asked_for_as_a_control(tmp_path):
    c = camus_demo.get_config("quick")  # probe, transfer.init = "": the configs' defaults
    with pytest.raises(ConfigError) as e:
        loop.run_transfer(c, tmp_path / "work")
    (line,) = str(e.value).splitlines()
    assert line.startswith(
        "transfer.init is empty with transfer.mode = 'probe': that probes a random encoder"
    )
    assert "--config.transfer.mode=finetune for the paper's Scratch row" in line
    assert not (tmp_path / "work").exists()  # refused before the workdir is claimed
    loop.check_setting(_finetune(hmcqu.get_config()))  # a random encoder fine-tuned: the Scratch row
    c.transfer.probe_random_encoder = True
    loop.check_setting(c)
    c.transfer.init = str(tmp_path / "runs" / "echonett")
    with pytest.raises(ConfigError, match=r"transfer.init = '.*echonett': no such file or folder"):
        loop.check_setting(c)


def _finetune(c):
    c.transfer.mode = "finetune"
    return c


def _prepared(task, labels, folds, groups=None, clips=None):
    """A hand-made PreparedSet: names v0, v1, ...; 2-frame 32 px clips of zeros unless given."""
    n = len(labels)
    names = tuple(f"v{i}" for i in range(n))
    groups = tuple(groups or (("MI" if y else "normal") if task == "hmcqu" else "Good" for y in labels))
    clips = np.zeros((n, 2, 32, 32), np.uint8) if clips is None else clips
    folds = tuple(
        transfer_sets.Fold(k, [f"v{i}" for i in tr], [f"v{i}" for i in te])
        for k, (tr, te) in enumerate(folds)
    )
    return transfer_sets.PreparedSet(
        task, names, clips, np.asarray(labels, np.float32), groups, np.full(n, 10), folds, (), "hand-made"
    )


def test_a_one_class_hmcqu_set_or_training_fold_is_refused_naming_the_counts():
    c = _finetune(hmcqu.get_config())
    all_mi = _prepared("hmcqu", [1, 1, 1, 1], [([0, 1], [2, 3]), ([2, 3], [0, 1])])
    with pytest.raises(
        DataError, match=r"the HMC-QU set read has 4 MI and 0 normal videos \(data.subset = 'masks'"
    ):
        loop.check_folds(c, all_mi, [0, 1])
    # both classes in the set, but fold 1 trains on MI only
    data = _prepared("hmcqu", [1, 1, 0, 0], [([0, 2, 3], [1]), ([0, 1], [2, 3])])
    c.finetune.batch_size = 2
    with pytest.raises(
        DataError, match=r"^fold 1: its 2 training videos are 2 MI and 0 normal: a classifier"
    ):
        loop.check_folds(c, data, [0, 1])
    loop.check_folds(c, data, [0])  # a one-class test fold is allowed: its AUROC says it is undefined
    c.finetune.batch_size = 4
    with pytest.raises(
        ConfigError, match=r"finetune.batch_size = 4: more than the training videos of a fold \(fold 0: 3\)"
    ):
        loop.check_folds(c, data, [0])


def test_the_protocol_line_says_when_split_files_give_one_fold_not_ten():
    c = camus.get_config()
    c.data.folds = "split_files"
    one = _prepared("camus", [50.0] * 4, [([0, 1], [2, 3])])
    assert loop.protocol_line(c, one, [0]).startswith(
        "1 fold, not a 10-fold cross-validation: data.folds = split_files"
    )
    c.data.folds = "official"
    two = _prepared("camus", [50.0] * 4, [([0, 1], [2, 3]), ([2, 3], [0, 1])])
    assert (
        loop.protocol_line(c, two, [1])
        == "2-fold cross-validation (data.folds = 'official'); folds [1] run (transfer.folds)"
    )


# -------------------------------------------------------------------- what a fold is computed from


def test_a_fold_record_names_each_changed_gone_or_new_video():
    data = _prepared("camus", [50.0, 60.0, 70.0, 40.0], [([0, 1], [2, 3])])
    fold = data.folds[0]
    old = provenance.fold_inputs(fold, provenance.video_digests(data))
    assert provenance.differences(old, old) == []
    # one EF edited, one clip changed by a pixel: both named
    clips = data.clips.copy()
    clips[3, 0, 0, 0] = 1
    edited = _prepared("camus", [50.0, 61.0, 70.0, 40.0], [([0, 1], [2, 3])], clips=clips)
    new = provenance.fold_inputs(edited.folds[0], provenance.video_digests(edited))
    assert provenance.differences(old, new) == ["label, group or clip of 2 video(s) changed (v1, v3)"]
    # a video no longer read (left out of the folds) and another fold assignment
    moved = provenance.fold_inputs(
        transfer_sets.Fold(0, ["v0", "v2"], ["v3"]), provenance.video_digests(data)
    )
    assert provenance.differences(old, moved) == [
        "train: 1 video(s) no longer there (v1)",
        "train: 1 new video(s) (v2)",
        "test: 1 video(s) no longer there (v2)",
    ]
    assert provenance.differences(None, old) == [
        "it records no inputs (written before fold results recorded them), so it cannot be checked"
    ]


def test_the_summary_refuses_a_video_tested_twice_or_not_in_the_current_set():
    results = [
        {"fold": 0, "predictions": [{"name": "v0"}, {"name": "v1"}]},
        {"fold": 1, "predictions": [{"name": "v1"}, {"name": "v2"}]},
    ]
    with pytest.raises(
        DataError, match=r"1 video\(s\) tested in more than one fold, e.g. v1 \(folds \[0, 1\]\)"
    ):
        provenance.check_tested_once(results, ["v0", "v1", "v2"])
    results[1]["predictions"] = [{"name": "v2"}, {"name": "v9"}]
    with pytest.raises(DataError, match=r"1 tested video\(s\) not in the current set \(v9\)"):
        provenance.check_tested_once(results, ["v0", "v1", "v2"])
    provenance.check_tested_once(results[:1], ["v0", "v1"])


def _stub_training(self):
    """FoldRun.train_and_test without training: the output of test video i is its label + 1 + i % 3."""
    return {
        "fold": self.fold.index,
        "sizes": {"train": len(self.fold.train), "val": len(self.fold.val), "test": len(self.fold.test)},
        "init": "stub",
        "tested_epoch": 0,
        "epoch_chosen_on": "stub",
        "history": [],
        "seconds": 0.0,
        "predictions": [
            {
                "name": self.data.names[i],
                "label": float(self.data.labels[i]),
                "output": float(self.data.labels[i]) + 1.0 + i % 3,
                "group": self.data.groups[i],
            }
            for i in self.test_rows
        ],
        "inputs": self.inputs,
    }


def _fold_run(c, work, data, k=0):
    return loop.FoldRun(c, work, data, data.folds[k], mesh=None)


def test_stale_checkpoints_are_not_resumed_a_stale_result_not_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(loop.FoldRun, "train_and_test", _stub_training)
    c = _finetune(camus.get_config())
    data = _prepared("camus", [50.0, 60.0, 70.0, 40.0], [([0, 1], [2, 3])])
    edited = _prepared("camus", [50.0, 60.0, 70.0, 45.0], [([0, 1], [2, 3])])
    work = tmp_path / "work"
    fold_dir = work / "folds" / "fold0"
    # an unfinished fold of other data: its start wrote inputs.json, then a checkpoint
    first = _fold_run(c, work, data)
    fold_dir.mkdir(parents=True)
    (fold_dir / "inputs.json").write_text(json.dumps(first.inputs))
    (fold_dir / "checkpoints" / "latest" / "1").mkdir(parents=True)
    (fold_dir / "checkpoints" / "latest" / "1" / "state").write_text("weights")
    with pytest.raises(provenance.StaleFoldError) as e:
        _fold_run(c, work, edited).run()
    assert str(e.value) == (
        f"{fold_dir} was computed from other data than the current set (label, group or clip of 1 video(s) "
        "changed (v3)); pass --allow_config_change to compute fold 0 again (the folder moves to fold0.stale-1), "
        "or use another --workdir"
    )
    # checkpoints without any record (an older version) cannot be checked either
    (fold_dir / "inputs.json").unlink()
    with pytest.raises(provenance.StaleFoldError, match="records no inputs"):
        _fold_run(c, work, data).run()
    # allowed: the folder is kept whole beside the new one, whose fold starts from nothing
    result = _fold_run(c, work, edited).run(recompute_stale=True)
    assert (
        tmp_path / "work" / "folds" / "fold0.stale-1" / "checkpoints" / "latest" / "1" / "state"
    ).is_file()
    assert not (fold_dir / "checkpoints").exists()
    assert (
        result["recomputed"]["because"]
        == "it records no inputs (written before fold results recorded them), so it cannot be checked"
    )
    assert [p["label"] for p in result["predictions"]] == [70.0, 45.0]
    saved = json.loads((fold_dir / "result.json").read_text())
    assert saved["inputs"] == _fold_run(c, work, edited).inputs
    # the finished fold is read back under the same data, refused under the old
    stamp = os.stat(fold_dir / "result.json").st_mtime_ns
    assert _fold_run(c, work, edited).run()["predictions"] == result["predictions"]
    assert os.stat(fold_dir / "result.json").st_mtime_ns == stamp
    with pytest.raises(provenance.StaleFoldError, match=r"fold0.stale-2"):
        _fold_run(c, work, data).run()
    # a start that failed before its first checkpoint left only empty folders: nothing to refuse
    empty = work / "folds" / "fold0"
    os.rename(empty, tmp_path / "finished")
    (empty / "checkpoints" / "latest").mkdir(parents=True)
    (empty / "inputs.json").write_text(json.dumps(first.inputs))
    assert (
        _fold_run(c, work, edited).run()["inputs"]["videos"]["v3"] == provenance.video_digests(edited)["v3"]
    )


def _set_ef(root: Path, patient: str, ef: float) -> None:
    """Rewrites the EF of ``patient`` in a synthetic 2019 CAMUS download (``LVef`` of Info_4CH.cfg)."""
    cfg = root / "training" / patient / "Info_4CH.cfg"
    lines = [f"LVef: {ef}" if line.startswith("LVef:") else line for line in cfg.read_text().splitlines()]
    cfg.write_text("\n".join(lines) + "\n")


def test_a_rerun_of_edited_or_other_data_is_refused_then_recomputed_when_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(loop.FoldRun, "train_and_test", _stub_training)
    root = write_camus_dataset(tmp_path / "camus", n_patients=12, seed=3, size=32, release="2019")
    c = _finetune(_camus_config(root))
    c.transfer.folds = "0,4"  # fold 4 tests patient0005 and patient0006 (12 patients, 10 folds)
    work = tmp_path / "work"
    first = loop.run_transfer(c, work)
    assert (
        first["folds"] == [0, 4]
        and first["protocol"]
        == "10-fold cross-validation (data.folds = 'official'); folds [0, 4] run (transfer.folds)"
    )
    first_rows = list(csv.DictReader((work / "predictions.csv").open()))
    assert [r["name"] for r in first_rows] == ["patient0001", "patient0005", "patient0006"]
    # pooled beside the fold means: one MAE over the 3 patients (stub errors 1 + i % 3 for rows 0, 4, 5)
    assert first["pooled"]["all/mae"] == pytest.approx((1 + 2 + 3) / 3)
    assert first["summary"]["all/mae"]["mean"] == pytest.approx((1 + (2 + 3) / 2) / 2)
    table = (work / "table.md").read_text()
    assert (
        "| ours: fine-tuning, scratch, pooled | " in table
        and "| train-mean EF baseline, pooled | - |" in table
    )
    assert "The paper does not say whether its CAMUS numbers are means over the 10 folds" in table
    assert first["paper_comparison"] == tasks.CAMUS_COMPARISON
    # nothing changed: read back
    assert loop.run_transfer(c, work)["summary"] == first["summary"]
    # one EF edited, another patient's file broken (now left out)
    _set_ef(root, "patient0005", 33.3)
    raw = next((root / "training" / "patient0006").glob("*_4CH_sequence.raw"))
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(provenance.StaleFoldError) as e:
        loop.run_transfer(c, work)
    assert (
        "fold0 was computed from other data than the current set (train: 1 video(s) no longer there (patient0006); "
        "label, group or clip of 1 video(s) changed (patient0005))" in str(e.value)
    )
    again = loop.run_transfer(c, work, allow_config_change=True)
    rows = list(csv.DictReader((work / "predictions.csv").open()))
    assert [(r["name"], float(r["label"])) for r in rows] == [
        ("patient0001", float(first_rows[0]["label"])),
        ("patient0005", float(np.float32(33.3))),
    ]
    assert float(first_rows[1]["label"]) != float(np.float32(33.3))
    assert [r["fold"] for r in again["per_fold"]] == [0, 4]
    assert all(r["recomputed"]["old_folder"].endswith(f"fold{r['fold']}.stale-1") for r in again["per_fold"])
    # another download under data.root (same names, other EFs and clips): refused again
    other = write_camus_dataset(tmp_path / "other", n_patients=12, seed=4, size=32, release="2019")
    c.data.root = str(other)
    with pytest.raises(
        provenance.StaleFoldError,
        match=r"train: 1 new video\(s\) \(patient0006\); label, group or clip of 11 video\(s\) changed",
    ):
        loop.run_transfer(c, work)


def test_corrected_transfer_commands_are_taken_after_failed_starts_and_config_json_records_what_ran(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(loop.FoldRun, "train_and_test", _stub_training)
    root = write_camus_dataset(tmp_path / "camus", n_patients=12, seed=3, size=32, release="2019")
    work = tmp_path / "work"
    c = _finetune(_camus_config(root))
    # each start fails after claiming the workdir; each next command is taken, not refused as a change
    for field, value, error, message in (
        ("view", "PLAX", ConfigError, "CAMUS view must be one of"),
        ("n_folds", 50, DataError, "12 items cannot fill 50 folds"),
    ):
        bad = _finetune(_camus_config(root))
        bad.data[field] = value
        with pytest.raises(error, match=message):
            loop.run_transfer(bad, work)
        assert json.loads((work / "config.json").read_text())["data"][field] == value
    for batch, message in (
        (16, r"finetune.batch_size = 16: more than the training videos of a fold \(fold 0: 11\)"),
        (6, "finetune.batch_size = 6: must be a multiple of the 4 devices"),
    ):
        c.finetune.batch_size = batch
        with pytest.raises(ConfigError, match=message):
            loop.run_transfer(c, work)
    # transfer.init names a tiny run while the config says small: the tiny model is what is trained
    init = tmp_path / "runs" / "tiny"
    init.mkdir(parents=True)
    (init / "config.json").write_text(json.dumps({"model": {"preset": "tiny"}}))
    c.finetune.batch_size = 4
    c.model.preset = "small"
    c.transfer.init = str(init)
    loop.run_transfer(c, work)
    saved = json.loads((work / "config.json").read_text())
    assert saved["model"]["preset"] == "tiny" and saved["finetune"]["batch_size"] == 4
    assert c.model.preset == "small"  # the caller's config is left as it was
    # now the workdir holds fold results: a change is refused
    c.finetune.lr = 0.5
    with pytest.raises(workdir_lib.ConfigMismatchError, match="finetune.lr"):
        loop.run_transfer(c, work)


# ----------------------------------------------------------------------- a dataset is one record


@dataclasses.dataclass(frozen=True)
class _ToyRecord:
    name: str
    label: float
    group: str
    frames: np.ndarray  # [F, H, W] grey uint8


@dataclasses.dataclass(frozen=True)
class _ToySet(NamedRecords[_ToyRecord]):
    """A download of ``n`` toy videos in memory (a reader's dataset: records, view, skipped, report)."""

    records: tuple[_ToyRecord, ...]
    view: str = "toy"
    skipped: tuple = ()
    NAME_FIELD: ClassVar[str] = "name"

    def report(self, unreadable=()) -> str:
        return f"toy set: {len(self.records) - len(unreadable)} of {len(self.records)} videos read"


def _toy_task(name: str, kind: str, n: int = 12) -> tasks.Task:
    """A third dataset, registered by the test alone: ``n`` videos t00, t01, ... whose frames brighten
    with the label; 2 folds holding out one half each, the last 2 videos of the rest for validation."""
    labels = [40.0 + 2 * i if kind == "regression" else float(i % 2) for i in range(n)]
    groups = ["a" if i % 2 else "b" for i in range(n)]
    rng = np.random.default_rng(0)
    records = tuple(
        _ToyRecord(f"t{i:02d}", labels[i], groups[i], rng.integers(0, 255, (6, 16, 16), dtype=np.uint8))
        for i in range(n)
    )

    def read(data_config, root):
        names = [r.name for r in records]
        halves = (names[: n // 2], names[n // 2 :])
        folds = [
            Fold(k, [x for x in names if x not in test][:-2], test, [x for x in names if x not in test][-2:])
            for k, test in enumerate(halves)
        ]
        return tasks.Source(_ToySet(records), folds, [], {})

    def write_synthetic(root, synthetic):
        raise AssertionError("the toy set has no synthetic download")

    regression = kind == "regression"
    return tasks.Task(
        name=name,
        title="Toy",
        kind=transfer_steps.KINDS[kind],
        read=read,
        frames=lambda record, selection: record.frames,
        label=lambda record: (record.label, record.group),
        frame_selection=lambda data_config: "",
        write_synthetic=write_synthetic,
        describe_data=lambda d: "the toy set",
        headline="all/mae" if regression else "accuracy",
        baseline_label="train-mean baseline" if regression else "majority baseline",
        columns={"all/corr": "r", "all/mae": "MAE"} if regression else {"accuracy": "Acc.", "auroc": "AUROC"},
        paper_rows={},
        comparison="No paper rows: a toy set.",
        pooled_rows=regression,
        groups={"all": ("a", "b")},
        classes=("sick", "well"),
    )


@pytest.fixture
def toy(request):
    """Registers a toy task (``request.param``: its kind) for one test, and removes it after."""
    task = tasks.register(_toy_task(f"toy_{request.param}", request.param))
    yield task
    tasks.unregister(task.name)


def _toy_config(task: tasks.Task, root: Path):
    c = _finetune(camus_demo.get_config("quick"))  # tiny model, 8-frame 32 px clips, 2 epochs of 2 steps
    c.task = task.name
    c.data.synthetic.enabled = False
    c.data.root = str(root)
    c.transfer.folds = ""
    return c


@pytest.mark.parametrize("toy", ["regression"], indirect=True)
def test_a_new_dataset_is_one_record_the_loop_and_tables_only_read(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(loop.FoldRun, "train_and_test", _stub_training)
    work = tmp_path / "work"
    summary = loop.cross_validate(_toy_config(toy, tmp_path / "toy"), work)
    assert summary["task"] == "toy_regression" and summary["folds"] == [0, 1]
    assert summary["data"] == "toy set: 12 of 12 videos read; 12 clips of 8 x 32 x 32"
    assert summary["protocol"] == "2-fold cross-validation (data.folds = 'official')"
    # the stub's outputs are the label + 1 + i % 3: fold 0 tests t00..t05, errors 1 2 3 1 2 3
    assert summary["pooled"]["all/mae"] == pytest.approx(2.0)
    assert summary["per_fold"][0]["train_mean_ef"] == pytest.approx(np.mean([52, 54, 56, 58]))
    table = (work / "table.md").read_text()
    assert table.splitlines()[:2] == ["| Setting | r | MAE |", "|---|---|---|"]
    y = 40.0 + 2 * np.arange(12)
    r = np.corrcoef(y, y + 1 + np.arange(12) % 3)[0, 1]
    assert f"| ours: fine-tuning, scratch, pooled | {r:.3f} | 2.00 |" in table
    assert "| train-mean baseline | - |" in table and "paper:" not in table
    assert table.endswith("No paper rows: a toy set.\n")
    assert (
        f"\n\n{logs.small_run_note(12)}\n\n2-fold cross-validation" in table
    )  # 12 tested videos: a smoke run
    assert summary["small_run_note"] == logs.small_run_note(12)
    assert (work / "toy_regression_scatter.png").is_file()
    assert [r["name"] for r in csv.DictReader((work / "predictions.csv").open())][:2] == ["t00", "t01"]
    prepared = json.loads((work / transfer_sets.REPORT_FILE).read_text())
    assert prepared["groups"] == {"a": 6, "b": 6}
    assert prepared["folds"] == [{"fold": k, "train": 4, "val": 2, "test": 6} for k in (0, 1)]


@pytest.mark.parametrize("toy", ["classification"], indirect=True)
def test_a_new_classification_record_names_its_classes_when_a_fold_has_one(toy, tmp_path):
    c = _toy_config(toy, tmp_path / "toy")
    data = transfer_sets.prepare(toy, c.data, tmp_path / "work", progress=False)
    one_class = dataclasses.replace(data, labels=np.ones_like(data.labels))
    with pytest.raises(DataError, match=r"^the Toy set read has 12 sick and 0 well videos \(the toy set\)"):
        loop.check_folds(c, one_class, [0, 1])


@pytest.mark.slow
@pytest.mark.parametrize("toy", ["classification"], indirect=True)
def test_a_new_classification_record_trains_and_chooses_its_epoch_on_validation(toy, tmp_path):
    work = tmp_path / "work"
    c = _toy_config(toy, tmp_path / "toy")
    c.transfer.folds = "1"
    summary = loop.cross_validate(c, work)
    fold = json.loads((work / "folds" / "fold1" / "result.json").read_text())
    assert fold["epoch_chosen_on"] == "validation set" and fold["tested_epoch"] in (1, 2)
    history = fold["history"]
    assert [h["epoch"] for h in history] == [1, 2] and all(h["val_score"] > 0 for h in history)
    best = min(range(2), key=lambda e: (history[e]["val_score"], -e))  # ties go to the later epoch
    assert fold["tested_epoch"] == best + 1  # epochs numbered from 1
    outputs = np.array([p["output"] for p in fold["predictions"]])
    assert np.all((outputs > 0) & (outputs < 1))  # the sigmoid link: probabilities of "sick"
    assert fold["majority_class"] in (0, 1) and "accuracy" in summary["summary"]
    assert "| majority baseline |" in (work / "table.md").read_text()
