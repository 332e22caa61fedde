"""The paper's ablations (Tables 2 and 3) as runs of the training loop, with seeds, and their tables.

Each row of a table is a set of config overrides on top of the user's config; each (row, seed) is one
run of :func:`coreecho_jax.train.loop.train_and_evaluate` in ``<workdir>/table<k>/<row>/seed<s>``:

Table 2 (components; the paper reports R2 x 100, mean +- std of three runs):

* ``l1``: L1 only, through encoder and head (``loss.rnc_weight=0``), stage 1 only, random init.
* ``l1-rnc``: + Rank-N-Contrast (the first-stage loss, ``loss.rnc_weight=1``).
* ``l1-rnc-k400``: + Kinetics-400 initialisation (``model.init_from`` = the user's ``init_from``).
* ``l1-rnc-k400-lp``: + the second stage (MLP probing). It continues the ``l1-rnc-k400`` run of the
  same seed (``run.stages='2'``, ``model.init_from`` = that run's workdir, i.e. its best stage-1
  checkpoint), as the official ``train_lp.py`` starts from ``train.py``'s best checkpoint; the two
  rows therefore differ by the second stage only. Both K400 rows are skipped without ``init_from``.

Table 3 (augmentation A and two clips per video 2xC; all with the first-stage loss, stage 1 only,
random init, whose first row equals Table 2's ``l1-rnc``):

* ``rnc-aug-2clips``: the official setting.
* ``rnc-aug-1clip``: one clip seen twice, translated independently (``data.independent_views=False``).
* ``rnc-noaug-2clips``: no translation (``data.augment=False``).

A run whose ``results.json`` exists is not run again (after checking that its saved config matches),
nor is one whose twin in another table (same seed, equal config on every result field) has finished:
Table 3's first row reads Table 2's ``l1-rnc`` back, or the other way round. An unfinished run
resumes. A run folder holding another config (finished or not) stops the table with the differing
fields listed (:func:`check_saved_config`; there is no ``--allow_config_change`` here). The ablations
take an EchoNet config (:func:`check_ablation_config`). Every row reads the same prepared dataset as
any run does: the machine's shared data home (:func:`coreecho_jax.data.echonet.inputs.data_home`) when
``data.data_dir`` (and for a synthetic set ``data.root``) is empty, else the folders the config names.
(Rows used to prepare their own copy under ``<workdir>``; the data home made that redundant.) The
tables are written to ``<workdir>/table<k>.md`` and ``.json``: MAE and RMSE (EF %) and
R2 x 100 on the test split as mean +- sample standard deviation (ddof 1; none for one seed) over the
seeds, beside the paper's R2.

The command (:mod:`coreecho_jax.commands.experiments`; ``--config.<name>=<value>`` overrides go to every
row, except the fields the rows set)::

    coreecho ablate --config=demo --workdir=runs/ablate --table=2 --seeds=3
    coreecho ablate --config=echonet --workdir=runs/ablate --table=2 \
        --config.data.root=/data/EchoNet-Dynamic --init_from=/weights/uniformer_small_k400_16x8.pth
    coreecho ablate --config=demo:quick --workdir=/tmp/ablate --table=3 --seeds=1
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from coreecho_jax import config_check, logs
from coreecho_jax.errors import ConfigError
from coreecho_jax.evaluation.results import write_json
from coreecho_jax.train import workdir as workdir_lib

TrainFn = Callable[[ml_collections.ConfigDict, Path], Mapping[str, Any]]
METRICS = (("mae", "MAE"), ("rmse", "RMSE"), ("r2_x100", "R2"))  # results.json key, the paper's name
INIT_FROM = "model.init_from"


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a paper table: its marks in the paper's columns, its overrides, the paper's R2.

    ``overrides`` maps config fields to values; ``K400`` (:data:`INIT_FROM` = the user's Kinetics-400
    weights) and ``continue_from`` (stage 2 from that row's run of the same seed) are filled in by
    :func:`row_overrides`.
    """

    slug: str
    marks: tuple[bool, ...]
    overrides: Mapping[str, Any]
    paper_r2: tuple[float, float]  # mean, std (R2 x 100) as the paper prints them
    k400: bool = False
    continue_from: str | None = None


@dataclasses.dataclass(frozen=True)
class Table:
    """A paper table: its number, caption, mark columns and rows."""

    number: int
    caption: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    note: str = ""

    def fields(self) -> set[str]:
        """Config fields the rows set (a user override of one of them would be silently replaced)."""
        return {name for row in self.rows for name in row.overrides} | {INIT_FROM}


_STAGE1 = {"run.stages": "1", "data.augment": True, "data.independent_views": True}
_RNC = {"loss.rnc_weight": 1.0}

TABLES: dict[int, Table] = {
    2: Table(
        2,
        "Ablation study of CoReEcho components. K400: using pretrained weight on Kinetics-400. "
        "LP: the 2nd stage training.",
        ("L1", "L_1st", "K400", "LP"),
        (
            Row("l1", (True, False, False, False), {**_STAGE1, "loss.rnc_weight": 0.0}, (75.11, 1.73)),
            Row("l1-rnc", (True, True, False, False), {**_STAGE1, **_RNC}, (77.07, 0.38)),
            Row("l1-rnc-k400", (True, True, True, False), {**_STAGE1, **_RNC}, (81.50, 0.43), k400=True),
            Row(
                "l1-rnc-k400-lp",
                (True, True, True, True),
                {**_STAGE1, **_RNC, "run.stages": "2"},
                (81.59, 0.18),
                continue_from="l1-rnc-k400",
            ),
        ),
        note="The paper also lists EchoCoTr: R2 81.22 +- 0.80 (not run here).",
    ),
    3: Table(
        3,
        "Impact of augmentation and clip sampling. 2xC: two clips sampled from each video.",
        ("L_1st", "A", "2xC"),
        (
            Row("rnc-aug-2clips", (True, True, True), {**_STAGE1, **_RNC}, (77.07, 0.38)),
            Row(
                "rnc-aug-1clip",
                (True, True, False),
                {**_STAGE1, **_RNC, "data.independent_views": False},
                (76.93, 0.44),
            ),
            Row(
                "rnc-noaug-2clips",
                (True, False, True),
                {**_STAGE1, **_RNC, "data.augment": False},
                (68.24, 1.06),
            ),
        ),
    ),
}


def get_table(number: int | str) -> Table:
    """Table 2 or 3 of the paper; ConfigError for another number."""
    try:
        return TABLES[int(number)]
    except (KeyError, ValueError):
        raise ConfigError(f"--table={number}: the paper's ablations are tables {sorted(TABLES)}") from None


def run_dir(workdir: str | Path, table: int, slug: str, seed: int) -> Path:
    """``<workdir>/table<k>/<row>/seed<s>``: the workdir of one run."""
    return Path(workdir) / f"table{table}" / slug / f"seed{seed}"


def row_overrides(
    table: Table, row: Row, *, seed: int, workdir: str | Path, init_from: str = ""
) -> tuple[dict[str, Any] | None, str]:
    """The config overrides of ``row`` for ``seed``, or ``(None, why it is skipped)``.

    Adds ``seed`` and ``model.init_from``: ``""`` (random init), the user's ``init_from`` for a K400
    row, or the workdir of the row it continues.
    """
    out = {**row.overrides, "seed": int(seed), INIT_FROM: ""}
    if row.k400 or row.continue_from:
        if not init_from:
            return None, "needs Kinetics-400 weights: pass --init_from=<uniformer_small_k400_16x8.pth>"
        out[INIT_FROM] = str(Path(init_from).resolve())
    if row.continue_from:
        out[INIT_FROM] = str(run_dir(workdir, table.number, row.continue_from, seed))
    return out, ""


def check_user_overrides(table: Table, names: Iterable[str], init_from: str = "") -> None:
    """ConfigError for ``--config.<name>`` overrides of fields the rows set, or a misplaced ``init_from``."""
    clash = sorted(set(names) & table.fields())
    problems = [f"--config.{name}: table {table.number} sets this field in its rows" for name in clash]
    if clash and INIT_FROM in clash:
        problems.append("pass Kinetics-400 weights as --init_from (table 2 only)")
    if init_from and not any(row.k400 for row in table.rows):
        problems.append(f"--init_from: table {table.number} has no row with Kinetics-400 weights")
    elif init_from and not Path(init_from).exists():
        problems.append(f"--init_from={init_from}: no such file or folder")
    if problems:
        raise ConfigError("\n".join(problems))


def check_ablation_config(config: ml_collections.ConfigDict) -> None:
    """ConfigError unless ``config`` is an EchoNet-Dynamic run config: the ablations train on EchoNet."""
    if config_check.is_transfer(config):
        task = config_check.get_field(config, "task", "?")
        raise ConfigError(
            f"task = {task!r}: the ablations take an EchoNet config (configs/echonet.py or "
            "configs/demo.py), not a transfer config; run transfer configs with coreecho train"
        )


#: What to do when a run of the table holds another config (ablate has no --allow_config_change).
MISMATCH_ADVICE = (
    "ablate runs each row under the config it started with: move {run} away (or use another "
    "--workdir) to run the row again under the new config"
)


def check_saved_config(run: Path, config: ml_collections.ConfigDict) -> None:
    """ConfigMismatchError when ``run`` holds a run (finished or not) of another config; writes nothing.

    The message lists the differing fields as the training loop's check does, with ablate's own advice.
    """
    try:
        workdir_lib.check_config_against_saved(run, config, write=False)
    except workdir_lib.ConfigMismatchError as e:
        lines = str(e).splitlines()
        if lines[-1].startswith("use another --workdir"):  # train's advice: its flags are not ablate's
            lines = lines[:-1]
        advice = MISMATCH_ADVICE.format(run=run)
        raise workdir_lib.ConfigMismatchError("\n".join([*lines, advice])) from None


def row_config(base: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A checked copy of ``base`` with ``overrides`` (its data folders as the user set them)."""
    config = base.copy_and_resolve_references()
    config.update_from_flattened_dict(dict(overrides))
    config_check.check_config(config)
    return config


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    """``{'mean', 'std', 'n'}`` of the values (sample std, ddof 1; None for one value or a missing one)."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return {"mean": None, "std": None, "n": len(values)}
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}


def _finished_twin(target: Path, config: ml_collections.ConfigDict) -> Path | None:
    """A finished run of the same seed in another table with a config equal on every result field.

    Table 3's first row is Table 2's ``l1-rnc``: whichever table runs first, the other reads it back.
    """
    table_dir = target.parent.parent
    current = workdir_lib.config_record(config)
    for other in sorted(table_dir.parent.glob(f"table*/*/{target.name}")):
        if other.parent.parent == table_dir or not (other / workdir_lib.RESULTS_FILE).exists():
            continue
        saved_path = other / workdir_lib.CONFIG_FILE
        if saved_path.exists() and not workdir_lib.config_differences(
            json.loads(saved_path.read_text()), current
        ):
            return other
    return None


def _read_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def run_table(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    table_number: int | str,
    *,
    seeds: int = 3,
    init_from: str = "",
    train_fn: TrainFn | None = None,
    say: Callable[[str], None] = logs.say,
) -> dict[str, Any]:
    """Runs (or reads back) every row and seed of a table; writes ``table<k>.md`` and ``.json``; ends
    with the ``wrote: ...`` line (:func:`logs.closing`) and prints the table on stdout.

    Args:
        config: the user's config (with its overrides); seeds are ``config.seed + 0 .. seeds - 1``.
        workdir: the ablation folder; runs go to ``<workdir>/table<k>/<row>/seed<s>``.
        table_number: 2 or 3.
        seeds: runs per row (the paper: 3).
        init_from: Kinetics-400 UniFormer weights for Table 2's K400 rows ("" skips them).
        train_fn: ``(config, workdir) -> results`` (default: the training loop; for tests).
        say: where the one line per run goes (default: the log, :func:`logs.say`).

    Returns:
        The table as written to ``table<k>.json``.
    """
    if train_fn is None:
        from coreecho_jax.train import loop  # jax: only when a run trains

        train_fn = loop.train_and_evaluate
    check_ablation_config(config)
    table = get_table(table_number)
    if seeds < 1:
        raise ConfigError(f"--seeds={seeds}: must be >= 1")
    workdir = Path(workdir).resolve()  # absolute paths in the runs' configs: a rerun may start elsewhere
    first_seed = int(config.seed)
    rows = []
    t_all = time.perf_counter()
    with (
        logs.closing(workdir),
        logs.progress(desc=f"table {table.number}", total=len(table.rows) * seeds, unit="run") as bar,
    ):
        for row in table.rows:
            entry: dict[str, Any] = {
                "row": row.slug,
                "marks": dict(zip(table.columns, row.marks)),
                "runs": [],
            }
            for seed in range(first_seed, first_seed + seeds):
                overrides, why = row_overrides(table, row, seed=seed, workdir=workdir, init_from=init_from)
                if overrides is None:
                    entry["skipped"] = why
                    say(f"table {table.number} {row.slug}: skipped ({why})")
                    bar.update(first_seed + seeds - seed)
                    break
                run_config = row_config(config, overrides)
                entry["runs"].append(
                    _table_run(table, row, seed, workdir, run_config, overrides, train_fn, say)
                )
                bar.update(1)
            for key, _ in METRICS:
                entry[key] = _stats([r[key] for r in entry["runs"]]) if entry["runs"] else None
            entry["paper_r2_x100"] = {"mean": row.paper_r2[0], "std": row.paper_r2[1], "n": 3}
            rows.append(entry)
        out = {
            "table": table.number,
            "caption": table.caption,
            "columns": [*table.columns, *(name for _, name in METRICS), "R2 (paper)"],
            "seeds": list(range(first_seed, first_seed + seeds)),
            "rows": rows,
            "note": table.note,
        }
        workdir.mkdir(parents=True, exist_ok=True)
        write_json(out, workdir / f"table{table.number}.json")
        markdown = format_table(out)
        (workdir / f"table{table.number}.md").write_text(markdown)
        say(
            f"table {table.number}: {time.perf_counter() - t_all:.0f} s; {workdir / f'table{table.number}.md'}"
        )
        print(markdown, flush=True)
    return out


def _table_run(
    table: Table,
    row: Row,
    seed: int,
    workdir: Path,
    run_config: ml_collections.ConfigDict,
    overrides: Mapping[str, Any],
    train_fn: TrainFn,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """One (row, seed) of :func:`run_table`: trained, resumed or read back (its own folder's or a
    finished twin's results); its entry in the table's ``runs``."""
    target = run_dir(workdir, table.number, row.slug, seed)
    own, t0 = target, time.perf_counter()
    if not (target / workdir_lib.RESULTS_FILE).exists():
        target = _finished_twin(target, run_config) or target
    check_saved_config(target, run_config)  # finished or not: before reading or resuming it
    if (target / workdir_lib.RESULTS_FILE).exists():
        results = _read_results(target / workdir_lib.RESULTS_FILE)
        how = "finished earlier" if target == own else f"read from {target.relative_to(workdir)}"
    else:
        say(f"table {table.number} {row.slug} seed {seed}: training in {target}")
        results, how = train_fn(run_config, target), f"{time.perf_counter() - t0:.0f} s"
    run = {"seed": seed, "workdir": str(target), **{k: results.get(k) for k, _ in METRICS}}
    run["overrides"] = {k: v for k, v in overrides.items() if k != "seed"}
    say(
        f"table {table.number} {row.slug} seed {seed}: "
        + "  ".join(f"{name} {_number(run[k])}" for k, name in METRICS)
        + f"  ({how})"
    )
    return run


def _number(value: float | None, digits: int = 2) -> str:
    return "undefined" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _mean_std(stats: Mapping[str, Any] | None) -> str:
    if not stats:
        return "-"
    if stats["mean"] is None:
        return "undefined"
    if stats["std"] is None:
        return _number(stats["mean"])
    return f"{stats['mean']:.2f} +- {stats['std']:.2f}"


def format_table(table: Mapping[str, Any]) -> str:
    """The Markdown of a :func:`run_table` result: marks, MAE / RMSE / R2 (ours), R2 (paper)."""
    columns = table["columns"]
    marks = columns[: len(columns) - len(METRICS) - 1]
    lines = [
        f"Table {table['table']}. {table['caption']}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(":-:" if c in marks else "--:" for c in columns) + "|",
    ]
    for row in table["rows"]:
        cells = ["✓" if row["marks"][c] else "" for c in marks]
        if "skipped" in row:
            cells += ["skipped", "", ""]
        else:
            cells += [_mean_std(row[key]) for key, _ in METRICS]
        cells.append(_mean_std(row["paper_r2_x100"]))
        lines.append("| " + " | ".join(cells) + " |")
    n = len(table["seeds"])
    notes = [
        f"Ours: test MAE and RMSE (EF %) and R2 x 100, mean +- sample std over {n} seed(s) "
        f"{table['seeds']}; the paper: R2 x 100, mean +- std of three runs."
    ]
    notes += [f"Skipped {row['row']}: {row['skipped']}." for row in table["rows"] if "skipped" in row]
    notes += [table["note"]] if table.get("note") else []
    return "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in notes)
