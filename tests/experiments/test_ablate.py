"""Tests for the ablation tables (coreecho_jax.experiments.ablate): row mapping, tables, reruns, the command."""

import json
import os
import subprocess
import sys

import pytest
from absl import flags

from coreecho_jax import cli, config_check
from coreecho_jax.errors import ConfigError
from coreecho_jax.experiments import ablate
from coreecho_jax.train import workdir as workdir_lib
from tests.paths import REPO


def _overrides(table, slug, **kw):
    row = next(r for r in ablate.get_table(table).rows if r.slug == slug)
    return ablate.row_overrides(ablate.get_table(table), row, seed=4, workdir="/w", **kw)


def test_rows_map_onto_the_papers_settings(tmp_path):
    k400 = tmp_path / "k400.pth"
    base = {"seed": 4, "run.stages": "1", "data.augment": True, "data.independent_views": True}
    table2 = {
        "l1": {"loss.rnc_weight": 0.0, "model.init_from": ""},
        "l1-rnc": {"loss.rnc_weight": 1.0, "model.init_from": ""},
        "l1-rnc-k400": {"loss.rnc_weight": 1.0, "model.init_from": str(k400)},
        # LP: stage 2 only, from the K400 row's stage-1 run of the same seed.
        "l1-rnc-k400-lp": {
            "loss.rnc_weight": 1.0,
            "run.stages": "2",
            "model.init_from": "/w/table2/l1-rnc-k400/seed4",
        },
    }
    for slug, expected in table2.items():
        assert _overrides(2, slug, init_from=str(k400)) == ({**base, **expected}, ""), slug
    table3 = {
        "rnc-aug-2clips": {},
        "rnc-aug-1clip": {"data.independent_views": False},
        "rnc-noaug-2clips": {"data.augment": False},
    }
    for slug, expected in table3.items():
        assert _overrides(3, slug) == (
            {**base, "loss.rnc_weight": 1.0, "model.init_from": "", **expected},
            "",
        )
    # Without Kinetics-400 weights the K400 rows are skipped, with the reason.
    for slug in ("l1-rnc-k400", "l1-rnc-k400-lp"):
        overrides, why = _overrides(2, slug)
        assert overrides is None and "--init_from" in why
    assert [r.paper_r2 for r in ablate.get_table(3).rows] == [(77.07, 0.38), (76.93, 0.44), (68.24, 1.06)]
    with pytest.raises(ConfigError, match="tables"):
        ablate.get_table(4)


def test_row_configs_are_valid_and_user_overrides_of_row_fields_are_refused(quick_config, tmp_path):
    overrides, _ = _overrides(3, "rnc-aug-1clip")
    config = ablate.row_config(quick_config, overrides)
    assert config.data.independent_views is False and config.seed == 4
    # the rows read the machine's shared data (empty folders: the data home), or the user's folders
    assert config.data.root == "" and config.data.data_dir == ""
    quick_config.data.data_dir = str(tmp_path / "tfds")
    assert ablate.row_config(quick_config, overrides).data.data_dir == str(tmp_path / "tfds")
    assert quick_config.data.independent_views is True  # the user's config is left alone
    assert config_check.config_problems(config) == []
    with pytest.raises(ConfigError) as info:
        ablate.check_user_overrides(ablate.get_table(3), ["stage1.lr", "data.augment", "model.init_from"])
    assert str(info.value).splitlines()[:2] == [
        "--config.data.augment: table 3 sets this field in its rows",
        "--config.model.init_from: table 3 sets this field in its rows",
    ]
    with pytest.raises(ConfigError, match="table 3 has no row with Kinetics-400"):
        ablate.check_user_overrides(ablate.get_table(3), [], init_from=str(tmp_path))
    with pytest.raises(ConfigError, match="no such file"):
        ablate.check_user_overrides(ablate.get_table(2), [], init_from=str(tmp_path / "missing.pth"))


def _fake_train(calls):
    """A train function that writes the config and a results.json as the loop does, without training."""

    def train(config, workdir):
        calls.append(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / workdir_lib.CONFIG_FILE).write_text(json.dumps(workdir_lib.config_record(config)))
        weight, seed = config.loss.rnc_weight, config.seed
        results = {"mae": 5.0 - weight + seed, "rmse": 7.0 - weight, "r2_x100": 70.0 + weight + 2 * seed}
        (workdir / "results.json").write_text(json.dumps(results))
        return results

    return train


def test_table_of_seeds_and_a_rerun_that_trains_nothing(quick_config, tmp_path):
    calls, lines = [], []
    out = ablate.run_table(quick_config, tmp_path, 2, seeds=2, train_fn=_fake_train(calls), say=lines.append)
    assert [(c.parent.name, c.name) for c in calls] == [
        ("l1", "seed0"),
        ("l1", "seed1"),
        ("l1-rnc", "seed0"),
        ("l1-rnc", "seed1"),
    ]
    runs = [line for line in lines if line.startswith("table 2 l1") and " seed " in line]
    assert len(runs) == 8  # a start line and a result line per run
    assert runs[1] == "table 2 l1 seed 0: MAE 5.00  RMSE 7.00  R2 70.00  (0 s)"
    assert sum(line.startswith("table 2 l1-rnc-k400") and "skipped" in line for line in lines) == 2
    rows = {r["row"]: r for r in out["rows"]}
    assert rows["l1"]["mae"] == {"mean": 5.5, "std": pytest.approx(0.5**0.5), "n": 2}
    assert rows["l1-rnc"]["r2_x100"]["mean"] == 72.0
    assert "--init_from" in rows["l1-rnc-k400-lp"]["skipped"]
    assert json.loads((tmp_path / "table2.json").read_text()) == out
    md = (tmp_path / "table2.md").read_text().splitlines()
    assert md[2] == "| L1 | L_1st | K400 | LP | MAE | RMSE | R2 | R2 (paper) |"
    assert md[4] == "| ✓ |  |  |  | 5.50 +- 0.71 | 7.00 +- 0.00 | 71.00 +- 1.41 | 75.11 +- 1.73 |"
    assert md[7] == "| ✓ | ✓ | ✓ | ✓ | skipped |  |  | 81.59 +- 0.18 |"
    # A rerun reads the finished runs back; under a changed config it refuses to.
    again = ablate.run_table(
        quick_config, tmp_path, 2, seeds=2, train_fn=_fake_train(calls), say=lines.append
    )
    assert len(calls) == 4 and again == out
    # Table 3's first row is Table 2's l1-rnc: read back, not trained again.
    table3 = ablate.run_table(
        quick_config, tmp_path, 3, seeds=2, train_fn=_fake_train(calls), say=lines.append
    )
    assert [(c.parent.name, c.name) for c in calls[4:]] == [
        ("rnc-aug-1clip", "seed0"),
        ("rnc-aug-1clip", "seed1"),
        ("rnc-noaug-2clips", "seed0"),
        ("rnc-noaug-2clips", "seed1"),
    ]
    assert table3["rows"][0]["r2_x100"] == rows["l1-rnc"]["r2_x100"]
    assert (
        "table 3 rnc-aug-2clips seed 1: MAE 5.00  RMSE 6.00  R2 73.00  (read from table2/l1-rnc/seed1)"
        in lines
    )
    quick_config.stage1.lr = 0.5
    with pytest.raises(workdir_lib.ConfigMismatchError, match="stage1.lr") as info:
        ablate.run_table(quick_config, tmp_path, 2, seeds=2, train_fn=_fake_train(calls), say=lines.append)
    assert "allow_config_change" not in str(info.value)  # a flag of train, not of ablate
    assert str(info.value).splitlines()[-1] == (
        f"ablate runs each row under the config it started with: move {tmp_path / 'table2' / 'l1' / 'seed0'} "
        "away (or use another --workdir) to run the row again under the new config"
    )


def test_an_unfinished_run_of_another_config_is_refused_before_training(quick_config, tmp_path):
    run = ablate.run_dir(tmp_path, 3, "rnc-aug-2clips", 0)
    checkpoint = run / "checkpoints" / "stage1" / "latest" / "1"
    checkpoint.mkdir(parents=True)  # the run computed something: a checkpoint (else a rerun takes it over)
    (checkpoint / "state").write_text("epoch 1")
    saved = workdir_lib.config_record(quick_config)
    saved["stage1"]["lr"] = 0.5
    (run / workdir_lib.CONFIG_FILE).write_text(json.dumps(saved))
    calls = []
    with pytest.raises(workdir_lib.ConfigMismatchError) as info:
        ablate.run_table(quick_config, tmp_path, 3, seeds=1, train_fn=_fake_train(calls), say=print)
    lines = str(info.value).splitlines()
    assert lines[:2] == [
        f"{run} holds a run whose config differs on 1 field(s) that change results:",
        f"  stage1.lr: 0.5 -> {quick_config.stage1.lr!r}",
    ]
    assert "allow_config_change" not in str(info.value)
    assert lines[-1].startswith(f"ablate runs each row under the config it started with: move {run} away")
    assert calls == []
    # A start that computed nothing (config.json only) is no run: the row trains there under its config.
    for path in sorted(run.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (run / workdir_lib.CONFIG_FILE).write_text(json.dumps(saved))
    ablate.run_table(quick_config, tmp_path, 3, seeds=1, train_fn=_fake_train(calls), say=print)
    assert calls[0] == run


def test_a_transfer_config_is_refused_in_one_line(tmp_path):
    from configs import camus

    with pytest.raises(ConfigError) as info:
        ablate.run_table(camus.get_config(), tmp_path, 2, train_fn=_fake_train([]))
    assert str(info.value) == (
        "task = 'camus': the ablations take an EchoNet config (configs/echonet.py or configs/demo.py), "
        "not a transfer config; run transfer configs with coreecho train"
    )
    # the command says the same in one line
    command = [sys.executable, "-m", "coreecho_jax", "ablate", "--config=configs/hmcqu.py", "--table=3"]
    done = subprocess.run(
        [*command, f"--workdir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.startswith("error: task = 'hmcqu': the ablations take an EchoNet config")
    assert not (tmp_path / "table3").exists()


def test_the_command_reads_its_flags_without_touching_absl_s_global_flags(tmp_path, capsys):
    """Its flags are defined when the command runs, on their own FlagValues, so the command parses as
    often as it is called and leaves absl's global flags as they were."""
    global_flags = set(flags.FLAGS)
    demo = str(REPO / "configs" / "demo.py")
    argv = ["ablate", f"--config={demo}:quick", f"--workdir={tmp_path}", "--table=3", "--config.seed=4"]
    fv = cli.parse([*argv, "--seeds=2"]).flags
    assert (fv.config.seed, fv.workdir, fv.table, fv.seeds, fv.init_from) == (4, str(tmp_path), "3", 2, "")
    assert fv.config.data.frames == 8  # the :quick variant
    again = cli.parse(argv).flags
    assert again.seeds == 3 and again.config.seed == 4
    assert set(flags.FLAGS) == global_flags
    with pytest.raises(cli.UsageError, match="--table is required"):
        cli.parse(argv[:3])
    with pytest.raises(ConfigError, match="--config.sede: no such config field"):
        cli.parse([*argv, "--config.sede=1"])
    assert cli.main(["ablate", "--help"]) == 0  # prints the command's flags, runs nothing
    assert "--table=VALUE: <2|3>: The paper's table" in capsys.readouterr().out


@pytest.mark.slow
def test_the_command_trains_two_rows_writes_the_table_and_resumes(tmp_path):
    tiny = ["--config.stage1.epochs=1", "--config.run.max_steps_per_epoch=1", "--config.eval.bootstrap=0"]
    command = [sys.executable, "-m", "coreecho_jax", "ablate", "--config=demo:quick"]
    command += [f"--workdir={tmp_path}", "--table=2", "--seeds=1", *tiny]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((tmp_path / "table2.json").read_text())
    assert [r["row"] for r in table["rows"] if "skipped" not in r] == ["l1", "l1-rnc"]
    results = [tmp_path / "table2" / slug / "seed0" / "results.json" for slug in ("l1", "l1-rnc")]
    saved = [json.loads(p.read_text()) for p in results]
    for row, res in zip(table["rows"], saved):
        assert row["mae"]["mean"] == pytest.approx(res["mae"]) and row["mae"]["std"] is None
    configs = [json.loads((p.parent / "config.json").read_text()) for p in results]
    assert [c["loss"]["rnc_weight"] for c in configs] == [0.0, 1.0]
    assert "| ✓ |  |  |  | " in (tmp_path / "table2.md").read_text()
    mtimes = [p.stat().st_mtime_ns for p in results]
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p.stat().st_mtime_ns for p in results] == mtimes
    assert again.stderr.count("finished earlier") == 2 and "training in" not in again.stderr  # the log
    assert "| ✓ |  |  |  | " in again.stdout  # the table: the command's answer
