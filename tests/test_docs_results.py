"""The README's and the docs' results tables are what docs/results/generate.py writes from the kept
results files (docs/results/<date>_<name>/), so a number cannot drift from the run that produced it."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys

import pytest

from tests.paths import REPO


def _generator():
    """docs/results/generate.py, a plain script (docs/ is no package), loaded from its file."""
    name = "docs_results_generate"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "docs" / "results" / "generate.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


gen = _generator()


@pytest.fixture
def copy(tmp_path):
    """A copy of the README, the docs pages and the kept results, to change without touching the tree."""
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copytree(REPO / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png", "*.csv"))
    return tmp_path


def test_the_docs_tables_equal_what_the_generator_writes_from_the_kept_results():
    changed = gen.stale()
    assert not changed, "regenerate with python docs/results/generate.py: " + ", ".join(map(str, changed))


def test_the_pages_hold_the_blocks_the_readme_and_docs_promise():
    """Each block is used where its page says so (a marker deleted by an edit would leave hand-typed
    numbers behind unchecked)."""
    where = {
        "README.md": ["overview", "demo_wall"],
        "docs/training.md": ["demo_test"],
        "docs/prediction.md": ["demo_intervals"],
        "docs/transfer.md": ["camus", "hmcqu", "hmcqu_folds", "transfer_runs"],
        "docs/results/index.md": ["index"],
    }
    for page, blocks in where.items():
        found = gen.MARKER.findall((REPO / page).read_text())
        assert sorted(name for name, _ in found) == sorted(blocks), page
    assert sorted(b for blocks in where.values() for b in blocks) == sorted(gen.BLOCKS)


def test_a_changed_number_in_a_results_file_changes_the_tables(copy):
    results_dir = copy / "docs" / "results"
    demo = next(r for r in gen.load_runs(results_dir) if r.dataset == "echonet")
    results_path = demo.folder / "results.json"
    results = json.loads(results_path.read_text())
    assert gen.stale(copy, results_dir) == {}  # the copy is up to date, as the tree is
    results["mae"] = 7.123456
    results_path.write_text(json.dumps(results))

    changed = gen.stale(copy, results_dir)

    assert set(changed) == {copy / "README.md", copy / "docs" / "training.md"}
    assert "test MAE 7.12 [2.08, 3.21]" in changed[copy / "README.md"]
    assert "| MAE (EF %) | 7.123 [2.081, 3.208] |" in changed[copy / "docs" / "training.md"]
    assert gen.main(["--check"]) == 0  # the tree itself was not touched


def test_a_hand_edited_number_between_the_markers_is_found(copy):
    page = copy / "docs" / "transfer.md"
    text = page.read_text()
    edited = re.sub(r"(\| ours: MLP probing, EchoNet demo \| )[\d.]+", r"\g<1>0.999", text, count=1)
    assert edited != text
    page.write_text(edited)

    changed = gen.stale(copy, copy / "docs" / "results")

    assert list(changed) == [page] and changed[page] == text


def test_a_kept_run_without_its_command_is_refused_naming_the_file(copy):
    meta_path = next((copy / "docs" / "results").glob("*_camus_probe/run.json"))
    meta = json.loads(meta_path.read_text())
    del meta["command"]
    meta_path.write_text(json.dumps(meta))

    with pytest.raises(gen.ResultsError, match=r"camus_probe/run.json: missing field\(s\) command"):
        gen.load_runs(copy / "docs" / "results")


def test_a_kept_run_whose_folder_is_not_named_after_its_date_is_refused(copy):
    folder = next((copy / "docs" / "results").glob("*_hmcqu_probe"))
    folder.rename(folder.with_name("2026-01-01_hmcqu_probe"))

    with pytest.raises(gen.ResultsError, match="does not start with its date 2026-12-07_"):
        gen.load_runs(copy / "docs" / "results")


def test_an_unknown_block_name_is_refused(tmp_path):
    page = tmp_path / "page.md"
    with pytest.raises(gen.ResultsError, match=r"page.md: unknown results block 'camus_tabel'"):
        gen.render("<!-- results:camus_tabel --><!-- /results -->", [], page)


def test_the_paper_rows_of_the_overview_come_from_the_kept_tables():
    """The README's CAMUS and HMC-QU paper numbers are the ones the transfer runs printed."""
    runs = gen.load_runs()
    camus_row = gen.table_rows(gen.newest(runs, "camus").results["table"])["paper: Fine-tuning, CoReEcho"]
    overview = gen.overview(runs, REPO / "README.md")
    assert f"paper: G&M corr {camus_row[0]}, G&M MAE {camus_row[1]}" in overview


def test_links_point_at_the_folder_from_the_readme_and_at_run_json_from_a_docs_page():
    run = gen.newest(gen.load_runs(), "camus", "probe")
    assert gen.link(run, REPO / "README.md") == f"docs/results/{run.name}/"
    assert gen.link(run, REPO / "docs" / "transfer.md") == f"results/{run.name}/run.json"
    assert gen.link(run, REPO / "docs" / "results" / "index.md") == f"{run.name}/run.json"


def test_the_readme_holds_the_test_command_that_ci_runs():
    """.ci/run runs the README's test command word for word."""
    ci = (REPO / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line and not line.startswith("#"))
    assert command.strip() in (REPO / "README.md").read_text()


def test_the_readme_demo_time_prefers_a_quiet_timing_to_a_newer_loaded_one(tmp_path):
    loaded = gen.Run(
        tmp_path / "2026-12-09_demo",
        {"kind": "echonet", "date": "2026-12-09", "wall_s": 1937, "wall_note": "other jobs ran"},
        {},
    )
    quiet = gen.Run(
        tmp_path / "2026-12-08_demo",
        {
            "kind": "echonet",
            "date": "2026-12-08",
            "wall_s": 500,
            "wall_note": "nothing else ran",
            "quiet": True,
        },
        {},
    )
    assert (
        gen.demo_wall([loaded, quiet], tmp_path / "README.md")
        == "8 min 20 s on 2026-12-08 (nothing else ran)"
    )
    assert gen.demo_wall([loaded], tmp_path / "README.md") == "32 min 17 s on 2026-12-09 (other jobs ran)"
