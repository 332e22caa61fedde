"""bench/: a package imported one way (``bench.<script>``, run as ``python -m bench.<script>``), no
private names across scripts, and an index (bench/README.md) that lists every script with its command."""

from __future__ import annotations

import ast
import importlib
import re

import pytest

from tests.paths import REPO

BENCH = REPO / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")


def _tree(name: str) -> ast.Module:
    path = BENCH / f"{name}.py"
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_changes_no_import_path_and_reads_no_private_name_of_another(name):
    tree = _tree(name)
    source = ast.unparse(tree)
    assert "sys.path" not in source and "__file__" not in source
    private = []
    aliases = {}  # local name -> bench script it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "bench":
            for alias in node.names:
                if node.module == "bench" and alias.name in SCRIPTS:
                    aliases[alias.asname or alias.name] = alias.name
                elif alias.name.startswith("_"):
                    private.append(f"from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            assert not [a.name for a in node.names if a.name in SCRIPTS], "import scripts as bench.<script>"
    for node in ast.walk(tree):
        named = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        if named and node.value.id in aliases and node.attr.startswith("_"):
            private.append(f"{aliases[node.value.id]}.{node.attr}")
    assert not private


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_imports_as_a_module_of_the_bench_package(name):
    module = importlib.import_module(f"bench.{name}")
    assert module.__name__ == f"bench.{name}" and module.__doc__


def test_the_index_lists_every_script_with_its_command():
    index = (BENCH / "README.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)\.py` \|.*$", index, re.M)}
    assert sorted(rows) == SCRIPTS
    runnable = [n for n in SCRIPTS if "__main__" in (BENCH / f"{n}.py").read_text()]
    for name in runnable:
        assert f"`python -m bench.{name}" in rows[name], name
    assert set(SCRIPTS) - set(runnable) == {"official"}  # the helper the others time the official code with
