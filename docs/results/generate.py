"""Fills the results tables of the README and the docs pages from the kept results files.

Every number the README and the docs give for a run comes from a folder ``docs/results/<date>_<name>/``
that keeps the run's own output (``results.json`` and what else it wrote that is small) beside a
``run.json`` saying how it was made::

    {"title": "...", "kind": "echonet" | "transfer", "date": "YYYY-MM-DD",
     "command": "the exact command", "commit": "...", "machine": "...", "hardware": "2-core CPU",
     "software": "...",
     "wall_s": 1937, "wall_note": "...", "quiet": false, "results": "results.json",
     "init": "<folder of the run it started from>" (transfer), "notes": "..."}

The paper's own numbers, for the rows not run here yet, are in ``docs/results/paper/paper.json``.

A Markdown file marks each generated part with a pair of comments::

    <!-- results:NAME -->
    ... (written by this script) ...
    <!-- /results -->

and this script rewrites what lies between them (``NAME`` is one of ``BLOCKS``)::

    python docs/results/generate.py           # rewrite the marked parts in place
    python docs/results/generate.py --check   # exit 1 naming each part that differs (CI, tests)

Standard library only: it runs without the project's dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent
DOCS = RESULTS.parent
ROOT = DOCS.parent
PAPER = RESULTS / "paper" / "paper.json"
RUN_FIELDS = ("title", "kind", "date", "command", "commit", "machine", "hardware", "software", "results")
KINDS = ("echonet", "transfer")
MARKER = re.compile(r"<!-- results:([a-z][a-z0-9_]*) -->(.*?)<!-- /results -->", re.S)


class ResultsError(ValueError):
    """A kept results folder or a marker that cannot be read; the message names the file."""


@dataclass(frozen=True)
class Run:
    """One kept results folder: its ``run.json`` and its results file."""

    folder: Path
    meta: dict
    results: dict

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def dataset(self) -> str:
        """``echonet``, or the transfer task (``camus``, ``hmcqu``) its results name."""
        return self.results["task"] if self.meta["kind"] == "transfer" else "echonet"

    @property
    def mode(self) -> str:
        return self.results.get("mode", "")


def load_run(folder: Path) -> Run:
    """Reads ``folder/run.json`` and the results file it names; a missing field is a ResultsError."""
    meta_path = folder / "run.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"{meta_path}: not a readable JSON file ({e})") from e
    missing = [k for k in RUN_FIELDS if not meta.get(k)]
    if missing:
        raise ResultsError(f"{meta_path}: missing field(s) {', '.join(missing)}; expected {RUN_FIELDS}")
    if meta["kind"] not in KINDS:
        raise ResultsError(f"{meta_path}: kind {meta['kind']!r} is not one of {KINDS}")
    if not folder.name.startswith(meta["date"] + "_"):
        raise ResultsError(f"{meta_path}: the folder name does not start with its date {meta['date']}_")
    results_path = folder / meta["results"]
    try:
        results = json.loads(results_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"{results_path}: not a readable JSON file ({e})") from e
    return Run(folder, meta, results)


def load_runs(results_dir: Path = RESULTS) -> list[Run]:
    """Every kept run under ``results_dir`` (folders with a ``run.json``), oldest first."""
    return [load_run(p.parent) for p in sorted(results_dir.glob("*/run.json"))]


# ---------------------------------------------------------------------------------------------------
# Formatting


def wall(run: Run) -> str:
    """``32 min 17 s`` (``wall_s``), or ``not timed``."""
    seconds = run.meta.get("wall_s")
    if seconds is None:
        return "not timed"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes} min {s:02d} s" if minutes else f"{s} s"


def shown_command(run: Run) -> str:
    """The run's command without a leading ``nice -n N`` (scheduling only, same results)."""
    return re.sub(r"^nice -n \d+ ", "", run.meta["command"])


def link(run: Run, target: Path) -> str:
    """A relative link from the page ``target`` to the run's files: the folder from the README (a
    repository page), its ``run.json`` from a docs page (the site links files, not folders)."""
    if run.folder.parent.parent in target.parents:  # the docs folder the results lie in
        return Path(os.path.relpath(run.folder / "run.json", target.parent)).as_posix()
    return Path(os.path.relpath(run.folder, target.parent)).as_posix() + "/"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def ci(results: dict, key: str, digits: int = 2, scale: float = 1.0) -> str:
    """``2.62 [2.08, 3.21]`` from ``key``, ``key_ci_low``, ``key_ci_high``."""
    value = results[key] * scale
    lo, hi = results.get(f"{key}_ci_low"), results.get(f"{key}_ci_high")
    text = f"{value:.{digits}f}"
    if lo is not None and hi is not None:
        text += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return text


def mean_std(summary: dict, key: str, digits: int, scale: float = 1.0) -> str:
    entry = summary[key]
    return f"{entry['mean'] * scale:.{digits}f} ± {entry['std'] * scale:.{digits}f}"


def mode_label(mode: str) -> str:
    return {"probe": "MLP probing", "finetune": "fine-tuning"}[mode]


# ---------------------------------------------------------------------------------------------------
# The blocks: each takes the kept runs and the page it goes into, and returns Markdown.


def newest(runs: list[Run], dataset: str, mode: str = "") -> Run:
    """The newest kept run of ``dataset`` (and transfer ``mode``)."""
    found = [r for r in runs if r.dataset == dataset and (not mode or r.mode == mode)]
    if not found:
        raise ResultsError(f"no kept run of {dataset} {mode} under {RESULTS}".rstrip())
    return max(found, key=lambda r: (r.meta["date"], r.name))


def headline(run: Run) -> str:
    """The one metric of a run the overview shows."""
    r = run.results
    if run.dataset == "echonet":
        return f"test MAE {ci(r, 'mae')} EF % (95 % CI), R2 x 100 {r['r2_x100']:.1f}"
    s = r["summary"]
    if run.dataset == "camus":
        return f"MAE {mean_std(s, 'all/mae', 2)} EF %, r {mean_std(s, 'all/corr', 2)} (all patients)"
    base = r["baseline"]["accuracy"]["mean"]
    return f"AUROC {mean_std(s, 'auroc', 2)}, accuracy {mean_std(s, 'accuracy', 1)} % (majority {base:.1f} %)"


def paper_rows() -> list[dict]:
    try:
        return json.loads(PAPER.read_text())["rows"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise ResultsError(f"{PAPER}: not a readable paper file with 'rows' ({e})") from e


def paper_metric(row: dict, runs: list[Run]) -> str:
    """A paper row's metric: its own numbers, or a row of a kept transfer run's table (the paper's
    constants as every transfer run prints them)."""
    if "from_table" not in row:
        return f"MAE {row['mae']:.2f}, RMSE {row['rmse']:.2f}, R2 x 100 {row['r2_x100']:.2f}"
    dataset, label = row["from_table"]
    cells = table_rows(newest(runs, dataset).results["table"])
    if label not in cells:
        raise ResultsError(f"{PAPER}: no row {label!r} in the kept {dataset} table")
    header = table_header(newest(runs, dataset).results["table"])
    keep = ("G&M corr", "G&M MAE") if dataset == "camus" else ("F1", "Acc.")
    return ", ".join(f"{h} {v}" for h, v in zip(header[1:], cells[label]) if h in keep)


def overview(runs: list[Run], target: Path) -> str:
    """The README's table: every kept run (by dataset, probing before fine-tuning, oldest first), then
    the paper's rows not run here yet; the commands below it, numbered as the rows."""
    order = {"echonet": 0, "camus": 1, "hmcqu": 2}
    kept = sorted(runs, key=lambda r: (order[r.dataset], r.mode != "probe", r.meta["date"]))
    rows, commands = [], []
    for i, run in enumerate(kept, 1):
        hardware = run.meta["hardware"]
        files = f"[{run.name}]({link(run, target)})"
        rows.append([str(i), run.meta["title"], hardware, wall(run), headline(run), run.meta["date"], files])
        commands.append(
            f"# {i}: {run.meta['date']}, commit {run.meta['commit'].split()[0]}\n{shown_command(run)}"
        )
    for j, row in enumerate(paper_rows(), len(kept) + 1):
        rows.append(
            [
                str(j),
                row["setup"],
                "a GPU (needed)",
                "-",
                f"paper: {paper_metric(row, runs)}",
                "not run here yet",
                "-",
            ]
        )
        commands.append(f"# {j}: not run here yet\n{row['command']}")
    header = ["#", "setup", "hardware", "wall time", "metric", "date", "files"]
    return table(header, rows) + "\n\n```bash\n" + "\n".join(commands) + "\n```"


def demo_wall(runs: list[Run], target: Path) -> str:
    """The newest demo run's wall time, where and how it ran (one line); a run whose ``run.json`` says
    ``"quiet": true`` (nothing else running) wins over newer timings on a loaded machine."""
    quiet = [r for r in runs if r.dataset == "echonet" and r.meta.get("quiet")]
    run = newest(quiet, "echonet") if quiet else newest(runs, "echonet")
    note = run.meta.get("wall_note", "")
    return f"{wall(run)} on {run.meta['date']} ({note})" if note else f"{wall(run)} on {run.meta['date']}"


def demo_test(runs: list[Run], target: Path) -> str:
    """The newest demo run's test table: the rows the program prints at the end of training."""
    run = newest(runs, "echonet")
    r = run.results
    rows = [
        ["MAE (EF %)", ci(r, "mae", 3)],
        ["RMSE (EF %)", ci(r, "rmse", 3)],
        ["R2 x 100", ci(r, "r2", 3, scale=100.0)],
        ["MAE of predicting the train mean", f"{r['mae_of_predicting_train_mean']:.3f}"],
        [
            "Bland-Altman bias (EF %)",
            f"{r['ba_bias']:.3f} [{r['ba_loa_low']:.3f}, {r['ba_loa_high']:.3f}] (95 % LoA)",
        ],
        ["videos", f"{r['n']} ({r['clips_per_video']} clips each)"],
    ]
    caption = (
        f"{run.meta['date']}, commit {run.meta['commit'].split()[0]}, {run.meta['machine']}; "
        f"`{shown_command(run)}` ([files]({link(run, target)}))."
    )
    return table(["metric", "value [95 % CI]"], rows) + "\n\n" + caption


def demo_intervals(runs: list[Run], target: Path) -> str:
    """The newest demo run's EF-interval coverage and width per predicted category, and the AUROCs."""
    run = newest(runs, "echonet")
    r = run.results
    level = 100 * r["interval_level"]
    rows = [
        [
            "all videos",
            f"{100 * r['interval_coverage']:.1f} %",
            f"{r['interval_mean_width']:.2f}",
            str(r["interval_n"]),
        ]
    ]
    for name, what in r["interval_bins"].items():
        rows.append(
            [
                what,
                f"{100 * r[f'interval_coverage_{name}']:.1f} %",
                f"{r[f'interval_mean_width_{name}']:.2f}",
                str(r[f"interval_n_{name}"]),
            ]
        )
    text = table([f"test split, {level:g} % intervals", "coverage", "mean width (EF %)", "videos"], rows)
    notes = [f"- {reason}" for reason in r.get("interval_infinite_bins", {}).values()]
    for threshold in (40, 50):
        notes.append(f"- AUROC of EF < {threshold}: {ci(r, f'auroc_ef_below_{threshold}', 3)}")
    return text + "\n\n" + "\n".join(notes) + f"\n\n{run.meta['date']}, [files]({link(run, target)})."


def table_header(markdown: str) -> list[str]:
    return [c.strip() for c in markdown.splitlines()[0].strip("|").split("|")]


def table_rows(markdown: str) -> dict[str, list[str]]:
    """``{setting: cells}`` of a Markdown table (the header and rule lines skipped)."""
    rows = {}
    for line in markdown.splitlines()[2:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def transfer_table(runs: list[Run], target: Path, dataset: str) -> str:
    """One table of a transfer dataset: the newest probing and fine-tuning runs' rows (renamed after
    the EchoNet run they started from), the baseline once (checked equal in both), the paper's rows."""
    probe, finetune = newest(runs, dataset, "probe"), newest(runs, dataset, "finetune")
    header = table_header(probe.results["table"])
    if header != table_header(finetune.results["table"]):
        raise ResultsError(f"{probe.folder} and {finetune.folder}: their tables have other columns")
    ours, others = [], {}
    for run in (probe, finetune):
        label = f"ours: {mode_label(run.mode)}, EchoNet demo"
        for setting, cells in table_rows(run.results["table"]).items():
            if setting.startswith("ours:"):
                ours.append([label + (", pooled" if setting.endswith(", pooled") else ""), *cells])
            elif others.setdefault(setting, cells) != cells:
                raise ResultsError(f"{run.folder}: row {setting!r} differs from the other run's")
    rows = ours + [[setting, *cells] for setting, cells in others.items()]
    return table(header, rows)


def camus(runs: list[Run], target: Path) -> str:
    return transfer_table(runs, target, "camus")


def hmcqu(runs: list[Run], target: Path) -> str:
    return transfer_table(runs, target, "hmcqu")


def hmcqu_folds(runs: list[Run], target: Path) -> str:
    """HMC-QU per fold: AUROC and accuracy of both modes beside the majority class's accuracy."""
    probe, finetune = newest(runs, "hmcqu", "probe"), newest(runs, "hmcqu", "finetune")
    rows = []
    for p, f in zip(probe.results["per_fold"], finetune.results["per_fold"]):
        rows.append(
            [
                str(p["fold"]),
                f"{p['model']['auroc']:.2f}",
                f"{f['model']['auroc']:.2f}",
                f"{p['model']['accuracy']:.1f}",
                f"{f['model']['accuracy']:.1f}",
                f"{p['baseline']['accuracy']:.1f}",
            ]
        )
    header = [
        "fold",
        "AUROC probing",
        "AUROC fine-tuning",
        "acc. probing",
        "acc. fine-tuning",
        "acc. majority class",
    ]
    return table(header, rows)


def transfer_runs(runs: list[Run], target: Path) -> str:
    """The kept transfer runs: what, wall time, commit, files; then their commands."""
    kept = [r for r in runs if r.meta["kind"] == "transfer"]
    rows = [
        [r.meta["title"], wall(r), r.meta["date"], r.meta["commit"], f"[{r.name}]({link(r, target)})"]
        for r in kept
    ]
    commands = "\n".join(shown_command(r) for r in kept)
    return table(["run", "wall time", "date", "commit", "files"], rows) + f"\n\n```bash\n{commands}\n```"


def index(runs: list[Run], target: Path) -> str:
    """Every kept run: date, what, machine, commit, wall time, files."""
    rows = [
        [
            r.meta["date"],
            r.meta["title"],
            r.meta["machine"],
            r.meta["commit"],
            f"{wall(r)} ({r.meta.get('wall_note', '')})",
            f"[{r.name}]({link(r, target)})",
        ]
        for r in sorted(runs, key=lambda r: r.name, reverse=True)
    ]
    return table(["date", "run", "machine", "commit", "wall time", "files"], rows)


BLOCKS: dict[str, Callable[[list[Run], Path], str]] = {
    "overview": overview,
    "demo_wall": demo_wall,
    "demo_test": demo_test,
    "demo_intervals": demo_intervals,
    "camus": camus,
    "hmcqu": hmcqu,
    "hmcqu_folds": hmcqu_folds,
    "transfer_runs": transfer_runs,
    "index": index,
}
INLINE = {"demo_wall"}  # one line inside a sentence; the others are paragraphs


# ---------------------------------------------------------------------------------------------------
# Pages


def pages(root: Path = ROOT) -> list[Path]:
    """The Markdown files that may hold markers: the README and every docs page."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def render(text: str, runs: list[Run], target: Path) -> str:
    """``text`` with every marked part regenerated; an unknown block name is a ResultsError."""

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in BLOCKS:
            raise ResultsError(f"{target}: unknown results block {name!r}; known: {', '.join(BLOCKS)}")
        body = BLOCKS[name](runs, target)
        body = body if name in INLINE else f"\n\n{body}\n\n"
        return f"<!-- results:{name} -->{body}<!-- /results -->"

    return MARKER.sub(fill, text)


def stale(root: Path = ROOT, results_dir: Path = RESULTS) -> dict[Path, str]:
    """``{page: regenerated text}`` for every page whose marked parts differ from the kept results."""
    runs = load_runs(results_dir)
    changed = {}
    for page in pages(root):
        text = page.read_text()
        if "<!-- results:" in text:
            new = render(text, runs, page)
            if new != text:
                changed[page] = new
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page differs; write nothing")
    args = parser.parse_args(argv)
    try:
        changed = stale()
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for page, text in changed.items():
        rel = page.relative_to(ROOT)
        if args.check:
            print(f"{rel}: its results tables differ from docs/results (run python docs/results/generate.py)")
        else:
            page.write_text(text)
            print(f"{rel}: tables regenerated")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
