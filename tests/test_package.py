"""The installable package: pyproject.toml's packages, data, command and dependencies, requirements.txt
as their pinned set, and the slim install (no extras) that predicts a DICOM without TensorFlow.

``.ci/run`` builds the wheel and checks its file list; a real ``pip install .`` into a fresh environment
needs the network and minutes, so it is run by hand (docs/install.md).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from coreecho_jax import cli
from tests.data.test_video_io import echo_like, make_dicom
from tests.paths import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
EXTRAS = (
    "train",
    "transfer",
    "analysis",
    "hub",
    "dev",
)  # cuda12 is jax with other wheels; all is the others but dev; beam is pinned in requirements-beam.txt


def _requirements(lines: list[str]) -> list[Requirement]:
    return [Requirement(line) for line in lines]


def _requirements_txt(name: str = "requirements.txt") -> list[Requirement]:
    lines = [line.split(" #")[0].strip() for line in (REPO / name).read_text().splitlines()]
    return _requirements([line for line in lines if line and not line.startswith(("#", "-"))])


def _declared(*extras: str) -> list[Requirement]:
    optional = PROJECT["optional-dependencies"]
    return _requirements(PROJECT["dependencies"] + [r for extra in extras for r in optional[extra]])


def _key(r: Requirement) -> tuple[str, str]:
    return canonicalize_name(r.name), str(r.marker or "")


def test_the_package_its_data_and_its_command():
    assert PYPROJECT["build-system"]["build-backend"] == "setuptools.build_meta"
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["coreecho_jax*"]
    data = PYPROJECT["tool"]["setuptools"]["package-data"]["coreecho_jax.data.transfer"]
    folds = sorted(p.name for pattern in data for p in (REPO / "coreecho_jax/data/transfer").glob(pattern))
    assert folds == ["hmcfold.csv", "hmcfoldm.csv"]
    assert PROJECT["scripts"] == {"coreecho": "coreecho_jax.cli:main"} and callable(cli.main)
    # the configs the command reaches by name are package modules; the checkout's configs/ is a link
    assert (REPO / "coreecho_jax" / "configs" / "__init__.py").is_file()
    assert (REPO / "configs").is_symlink() and os.readlink(REPO / "configs") == "coreecho_jax/configs"


def test_python_version_is_what_the_pinned_set_needs():
    """requires-python is the highest floor among the pinned core packages (jax, flax, orbax: 3.11)."""
    floors = []
    for r in _declared():
        needs = importlib.metadata.metadata(r.name).get("Requires-Python") or ">=3"
        floors += [Version(s.version) for s in Requirement(f"x{needs}").specifier if s.operator == ">="]
    assert PROJECT["requires-python"] == f">={max(floors)}" == ">=3.11"


def _allows_within(pinned: Requirement, declared: Requirement) -> bool:
    """Whether every bound of ``declared`` holds at the bounds ``pinned`` sets (its floor is allowed, its
    ceiling is no higher)."""
    floors = [Version(s.version) for s in pinned.specifier if s.operator in (">=", "==", "~=")]
    ceilings = [Version(s.version) for s in pinned.specifier if s.operator in ("<", "<=")]
    upper = [Version(s.version) for s in declared.specifier if s.operator in ("<", "<=")]
    return (
        bool(floors)
        and all(declared.specifier.contains(f, prereleases=True) for f in floors)
        and all(any(c <= u for c in ceilings) for u in upper)
    )


def test_requirements_txt_pins_every_dependency_of_the_package_and_nothing_else():
    pinned = {_key(r): r for r in _requirements_txt()}
    declared = {_key(r): r for r in _declared(*EXTRAS)}
    assert sorted(pinned) == sorted(declared)  # names and platform markers alike
    for key, r in declared.items():
        assert _allows_within(pinned[key], r), f"requirements.txt {pinned[key]} vs pyproject.toml {r}"
    assert "-e ." in (REPO / "requirements.txt").read_text().splitlines()  # and the package itself


def test_requirements_beam_txt_pins_the_beam_extra_on_top_of_requirements_txt():
    pinned = {_key(r): r for r in _requirements_txt("requirements-beam.txt")}
    beam = {_key(r): r for r in _requirements(PROJECT["optional-dependencies"]["beam"])}
    assert sorted(pinned) == sorted(beam)
    for key, r in beam.items():
        assert _allows_within(pinned[key], r), f"requirements-beam.txt {pinned[key]} vs pyproject.toml {r}"
    assert "-r requirements.txt" in (REPO / "requirements-beam.txt").read_text().splitlines()


def test_tensorflow_has_a_wheel_name_on_every_platform():
    """tensorflow-cpu has no macOS and no ARM Linux wheels: those platforms take tensorflow."""
    tf = {canonicalize_name(r.name): r.marker for r in _declared("train") if r.name.startswith("tensorflow")}
    platforms = [("linux", "x86_64"), ("win32", "AMD64"), ("darwin", "arm64"), ("linux", "aarch64")]
    for platform, machine in platforms:
        env = {"sys_platform": platform, "platform_machine": machine}
        chosen = [name for name in ("tensorflow-cpu", "tensorflow") if tf[name].evaluate(env)]
        assert chosen == (["tensorflow"] if "arm" in machine or "aarch" in machine else ["tensorflow-cpu"])


def _third_party_imports() -> set[str]:
    names = set()
    for path in (REPO / "coreecho_jax").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"coreecho_jax", "__future__"}


def _modules_of(requirements: list[Requirement]) -> set[str]:
    """The top-level modules the installed distributions of ``requirements`` provide."""
    wanted = {canonicalize_name(r.name) for r in requirements}
    return {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if any(canonicalize_name(d) in wanted for d in dists)
    }


def test_every_third_party_import_of_the_library_is_a_declared_dependency():
    imported = _third_party_imports()
    assert {"jax", "flax", "tensorflow", "cv2", "SimpleITK", "umap"} <= imported
    assert not imported - _modules_of(_declared("train", "transfer", "analysis", "hub", "beam"))


#: Runs ``coreecho`` once per argument (fields split by \x1f) and checks that no extra's module was imported.
_RUN = """
import sys
from coreecho_jax import cli
for argv in sys.argv[2:]:
    try:
        cli.main(argv.split("\\x1f"))
    except SystemExit as e:
        print(f"exit {e.code}")
assert not set(sys.argv[1].split(",")) & {m.split(".")[0] for m in sys.modules}
"""


def _slim_site_packages(folder, blocked: set[str], extras_only: set[str]):
    """A view of this environment's site-packages without the extras' modules and distributions: links to
    every other entry (as an install without extras has them; ``python -S`` then reads only this view)."""
    folder.mkdir()
    for site in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in os.scandir(site):
            dist = entry.name.split("-")[0] if entry.name.endswith((".dist-info", ".egg-info")) else None
            if entry.name.split(".")[0] in blocked or (dist and canonicalize_name(dist) in extras_only):
                continue
            if not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry.path)
    return folder


def test_the_slim_install_imports_weights_and_predicts_a_dicom_without_tensorflow(tmp_path):
    blocked = _modules_of(_declared("train", "transfer", "analysis")) - _modules_of(_declared())
    assert {"tensorflow", "tensorflow_datasets", "pandas", "matplotlib", "SimpleITK", "umap"} <= blocked
    extras_only = {canonicalize_name(r.name) for r in _declared("train", "transfer", "analysis")}
    extras_only -= {canonicalize_name(r.name) for r in _declared()}
    site = _slim_site_packages(tmp_path / "site-packages", blocked, extras_only)
    frames, _ = echo_like(t=40)
    dicom = make_dicom(tmp_path / "echo.dcm", frames, photometric="MONOCHROME2")
    pth = REPO / "tests" / "fixtures" / "checkpoints" / "tiny_coreecho_best.pth"
    commands = [
        ["import-weights", f"--pth={pth}", f"--out={tmp_path / 'w'}", "--head_dim=16"],
        ["predict", "--config=demo:quick", f"--checkpoint={tmp_path / 'w'}", f"--video={dicom}"],
        ["train", "--config=demo:quick", f"--workdir={tmp_path / 'run'}"],  # needs the train extra
    ]
    done = subprocess.run(
        [sys.executable, "-S", "-c", _RUN, ",".join(sorted(blocked)), *("\x1f".join(c) for c in commands)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(site)])},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "keys mapped: 100" in out
    result = json.loads(out[out.index("{\n") : out.rindex("\n}") + 2])
    assert result["video"] == str(dicom) and 0 < result["ef_mean"] < 100 and len(result["ef_per_clip"]) == 3
    assert out.endswith("exit 1\n")  # train: one error line naming the extra
    assert re.fullmatch(
        r"error: coreecho train needs (tensorflow|matplotlib|pandas), which this install lacks: pip install "
        r'"coreecho-jax\[train\]" \(or \[all\]; docs/install.md lists the extras\)',
        done.stderr.splitlines()[-1],
    ), done.stderr[-2000:]


@pytest.mark.parametrize("module, extra", sorted(cli.EXTRAS.items()))
def test_each_optional_module_names_the_extra_that_brings_it(module, extra):
    assert module in _modules_of(_declared(extra)) - _modules_of(_declared())
