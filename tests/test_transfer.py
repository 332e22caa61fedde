"""Transfer learning (CAMUS, HMC-QU): configs, preparation, the tables, and the loop end to end."""

import json
import math
import os
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from configs import camus, camus_demo, hmcqu, hmcqu_demo
from coreecho_jax import cli, config_check
from coreecho_jax.checkpoints import manager as ckpt_lib
from coreecho_jax.data import transfer_sets
from coreecho_jax.data.camus import CamusError
from coreecho_jax.data.synthetic.camus import write_camus_dataset
from coreecho_jax.errors import ConfigError
from coreecho_jax.models import build_model
from coreecho_jax.train import steps as train_steps
from coreecho_jax.transfer import loop, report
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
    with pytest.raises(ConfigError, match="--mode=evaluate is not available for a transfer config"):
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
    m = report.regression_metrics(y, p, g)
    assert m["good_medium/n"] == 3 and m["poor/n"] == 2 and m["all/n"] == 5
    assert m["good_medium/mae"] == pytest.approx((2 + 3 + 1) / 3)
    assert m["poor/mae"] == pytest.approx(2.5)
    assert m["poor/corr"] == pytest.approx(1.0)  # two points, both falling
    assert m["all/corr"] == pytest.approx(np.corrcoef(y, p)[0, 1])
    one = report.regression_metrics(y[:1], p[:1], ["Poor"])
    assert math.isnan(one["poor/corr"]) and math.isnan(one["good_medium/mae"])


def test_classification_metrics_and_the_majority_baseline():
    y = np.array([1, 1, 1, 0, 0])
    prob = np.array([0.9, 0.6, 0.2, 0.4, 0.7])
    m = report.classification_metrics(y, prob, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 1)
    assert m["sensitivity"] == pytest.approx(200 / 3)
    assert m["specificity"] == pytest.approx(50.0)
    assert m["accuracy"] == pytest.approx(60.0)
    assert m["auroc"] == pytest.approx(3 / 6)  # 3 of the 6 (MI, normal) pairs ranked right
    f = report.fold_metrics("hmcqu", y, prob, ["MI"] * 5, train_labels=np.array([1, 1, 0]))
    assert f["majority_class"] == 1 and f["baseline"]["sensitivity"] == 100.0
    assert f["baseline"]["specificity"] == 0.0


def test_fold_summary_is_mean_and_sample_std_over_the_folds_where_defined():
    folds = [{"a": 1.0, "b": float("nan")}, {"a": 3.0, "b": 2.0}, {"a": 5.0, "b": 4.0}]
    s = report.summarize_folds(folds)
    assert s["a"] == {"mean": 3.0, "std": 2.0, "folds": 3}
    assert s["b"]["mean"] == 3.0 and s["b"]["folds"] == 2
    table = report.format_table("camus", {"ours": {"poor/corr": {"mean": 0.5, "std": 0.1, "folds": 2}}}, 3)
    assert "| ours | - | - | 0.500 ± 0.100 (2/3 folds) |" in table
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
    assert fold["epoch_chosen_on"].startswith("fixed epoch count") and fold["tested_epoch"] == 1
    assert len(fold["predictions"]) == fold["sizes"]["test"] == 2
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
