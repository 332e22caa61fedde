"""Package borders: TensorFlow only in ``data/echonet/`` and the corpus builder, no import circles, no package
importing one above it."""

import ast
import json
from pathlib import Path

from tests.conftest import run_python
from tests.paths import REPO

PACKAGE = REPO / "coreecho_jax"

# Which subpackages each subpackage may import (besides itself). Data flows data -> models -> losses ->
# train steps -> loop -> evaluation; the loop (train) is the one place that joins them all.
ALLOWED = {
    "errors": set(),
    "logs": set(),  # the log and progress setup: standard library only, below everything that reports
    "safe_pickle": {"errors"},
    "locks": set(),  # the one file lock: a workdir's run, a data folder's preparation
    "seeds": set(),  # the seed table: numpy only, below everything that draws
    "models": {"errors"},
    "losses": {"errors"},
    "data": {"errors", "safe_pickle", "locks", "seeds"},
    "evaluation": {"errors", "models", "losses"},
    "checkpoints": {"errors", "models", "safe_pickle"},
    # Inference (a trained model on a user's video) sits below training: see the inference-path tests.
    "inference": {"errors", "models", "data", "evaluation", "checkpoints"},
    "train": {
        "errors",
        "models",
        "losses",
        "data",
        "evaluation",
        "checkpoints",
        "config_check",
        "inference",
        "locks",
        "seeds",
    },
    "config_check": {"errors", "models", "losses"},
    # Above the loop: transfer learning (CAMUS, HMC-QU) and the analyses reuse data, models and steps.
    "transfer": {
        *("errors", "seeds", "models", "losses", "data", "evaluation", "checkpoints", "train"),
        "config_check",
    },
    # The analyses also read transfer models (Grad-CAM of a fold: its fresh head, its checkpoints' layout).
    "analysis": {
        *("errors", "models", "losses", "data", "evaluation", "checkpoints", "train", "config_check"),
        *("inference", "transfer"),
    },
    # Experiments that train (the ablation tables): runs of the loop, and a command (cli: flags, errors).
    "experiments": {
        *("errors", "models", "losses", "data", "evaluation", "checkpoints", "train", "config_check"),
        "cli",
    },
    # Weights for people (export, from_pretrained): above predict, on the inference path; the export
    # command checks its command line with cli's check (cli imports no training module at its top).
    "weights": {"errors", "models", "data", "evaluation", "checkpoints", "inference", "predict", "cli"},
}
#: The entry of predicting one video, and the package it is built from.
INFERENCE_ENTRY = "coreecho_jax.predict"
#: The Python API and the weights folder's export, on the same path (the export command's ``main`` also
#: reaches cli, whose modes import training inside functions: checked by running it, below).
WEIGHTS_API = ("coreecho_jax.weights.api", "coreecho_jax.weights.hub", "coreecho_jax.weights.card")
#: What the inference path must never load: training, transfer, the analyses (``--mode=embed`` joins a
#: Trainer), and TensorFlow (the modules of data/ that import it, :func:`tensorflow_modules`).
NOT_ON_THE_INFERENCE_PATH = ("coreecho_jax.train", "coreecho_jax.transfer", "coreecho_jax.analysis")


def test_models_losses_steps_evaluation_and_the_cli_load_no_tensorflow(tmp_path):
    code = f"""
import json, pkgutil, sys, importlib
import coreecho_jax.evaluation
for m in pkgutil.iter_modules(coreecho_jax.evaluation.__path__):
    importlib.import_module("coreecho_jax.evaluation." + m.name)
import coreecho_jax.models, coreecho_jax.losses, coreecho_jax.losses.heads, coreecho_jax.train.steps
import coreecho_jax.cli, coreecho_jax.config_check, coreecho_jax.train.workdir, coreecho_jax.train.loop
from coreecho_jax.train.writer import MetricWriter
from configs import demo
MetricWriter({str(tmp_path)!r}).write(1, {{"loss": 1.0}})
coreecho_jax.config_check.check_config(demo.get_config("quick"))
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
print(json.dumps({{"tensorflow": loaded[:5], "evaluation": sorted(
    m for m in sys.modules if m.startswith("coreecho_jax.evaluation."))}}))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["tensorflow"] == []
    assert report["evaluation"]  # the evaluation modules were really imported


def test_predicting_a_video_loads_no_training_transfer_analysis_or_tensorflow(tmp_path):
    """Importing the predict entry and the inference package, and predicting (up to the refusal of a
    still image, before any model), loads no training, transfer, analysis or TensorFlow module."""
    code = f"""
import json, pkgutil, sys, importlib
import cv2, numpy as np
from configs import demo
import coreecho_jax.inference
from coreecho_jax import predict
from coreecho_jax.data.video.video_types import NotAnEchoVideoError
for m in pkgutil.iter_modules(coreecho_jax.inference.__path__):
    importlib.import_module("coreecho_jax.inference." + m.name)
cv2.imwrite({str(tmp_path / "still.png")!r}, np.full((40, 40), 128, np.uint8))
try:
    predict.predict_file(demo.get_config(), {str(tmp_path / "still.png")!r}, {str(tmp_path)!r})
except NotAnEchoVideoError:
    pass
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets")
    or m.startswith({NOT_ON_THE_INFERENCE_PATH!r}))
print(json.dumps({{"loaded": loaded[:10], "inference": sorted(
    m for m in sys.modules if m.startswith("coreecho_jax.inference."))}}))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert {"coreecho_jax.inference.runs", "coreecho_jax.inference.video_clips"} <= set(report["inference"])


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of coreecho_jax it imports}``, function-level imports included.

    ``from a.b import c`` counts as an import of ``a.b.c`` when that is a module, else of ``a.b``.
    Imports under ``if TYPE_CHECKING:`` are left out (they never run).
    """
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and _is_type_checking(node)
            for n in ast.walk(node)
        }
        targets = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary circle found by depth-first search (each reported once, from its first module)."""
    found, seen = [], set()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append([*cycle, nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def _area(module: str) -> str:
    """``coreecho_jax.data.video.video_io`` -> ``data``; top-level modules are their own area."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "coreecho_jax"


def test_the_import_graph_has_no_circle():
    cycles = _cycles(import_graph())
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_package_imports_one_above_it():
    violations = []
    for module, targets in sorted(import_graph().items()):
        area = _area(module)
        if area not in ALLOWED:
            continue  # the top: cli, predict and the package docstring may import anything
        for target in sorted(targets):
            if _area(target) not in (area, "logs") and _area(target) not in ALLOWED[area]:
                violations.append(f"{module} imports {target}")
    assert not violations, "\n".join(violations)


def test_the_graph_reader_sees_real_edges():
    graph = import_graph()
    assert "coreecho_jax.train.steps" in graph["coreecho_jax.train.loop"]  # from ... import steps
    assert "coreecho_jax.models.coreecho" in graph["coreecho_jax.models"]
    assert "coreecho_jax.train.loop" in graph["coreecho_jax.cli"]  # a function-level import
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def tensorflow_modules() -> set[str]:
    """Modules of the package that import TensorFlow (or TFDS) themselves, function-level imports included."""
    out = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n.split(".")[0] in ("tensorflow", "tensorflow_datasets") for n in names):
                out.add(_module_name(path))
    return out


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` may import, directly or through others (function-level imports included)."""
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


#: Where TensorFlow may be imported: the EchoNet wing and the corpus wing's TFDS builder.
TENSORFLOW_HOMES = ("coreecho_jax.data.echonet.", "coreecho_jax.data.corpus.corpus_tfds")
#: The corpus wing's per-file work (run in the guarded child of every worker) and its Beam options.
CORPUS_WITHOUT_TENSORFLOW = ("sources", "reading", "guard", "runners")


def test_tensorflow_lives_in_the_echonet_data_wing_only():
    """TensorFlow (and TFDS) is imported by ``data/echonet/`` (the TFDS builder and the tf.data pipeline)
    and the corpus builder (``data/corpus/corpus_tfds.py``), nowhere else: the video readers, the corpus
    file reader and its guarded child, the transfer readers, models, training and inference stay free of
    it (the GPU machine and a slim install have no TensorFlow)."""
    outside = sorted(m for m in tensorflow_modules() if not m.startswith(TENSORFLOW_HOMES))
    assert not outside, outside
    assert tensorflow_modules()  # the check sees the modules that do import it
    graph, tensorflow = import_graph(), tensorflow_modules()
    corpus = [f"coreecho_jax.data.corpus.{m}" for m in CORPUS_WITHOUT_TENSORFLOW]
    assert {m: sorted(reachable(graph, m) & tensorflow) for m in corpus} == {m: [] for m in corpus}


def test_the_inference_path_reaches_no_training_transfer_analysis_or_tensorflow_module():
    graph = import_graph()
    starts = [INFERENCE_ENTRY, *WEIGHTS_API, *(m for m in graph if m.startswith("coreecho_jax.inference"))]
    tensorflow = tensorflow_modules()
    bad = {
        f"{start} -> {m}"
        for start in starts
        for m in reachable(graph, start)
        if m.startswith(NOT_ON_THE_INFERENCE_PATH) or m in tensorflow
    }
    assert not bad, "\n".join(sorted(bad))


def test_the_inference_path_checks_see_what_they_guard():
    graph = import_graph()
    assert {
        "coreecho_jax.data.echonet.pipeline",
        "coreecho_jax.data.echonet.echonet_tfds",
    } <= tensorflow_modules()
    assert "coreecho_jax.data.video.video_io" not in tensorflow_modules()
    assert "coreecho_jax.train.loop" in reachable(graph, "coreecho_jax.analysis.embed")
    assert {"coreecho_jax.inference.runs", "coreecho_jax.checkpoints.loading"} <= reachable(
        graph, INFERENCE_ENTRY
    )
    assert {INFERENCE_ENTRY, "coreecho_jax.inference.weights_folder"} <= reachable(graph, WEIGHTS_API[0])


def test_importing_the_package_loads_no_jax_and_gives_the_api_on_first_use():
    code = """
import json, sys
import coreecho_jax
before = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "flax", "numpy"))
api = coreecho_jax.from_pretrained.__module__, coreecho_jax.export_weights.__module__
print(json.dumps({"before": before, "api": api, "jax_after": "jax" in sys.modules}))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "before": [],
        "api": ["coreecho_jax.weights.api", "coreecho_jax.weights.export"],
        "jax_after": True,
    }


def test_exporting_and_loading_weights_load_no_training_transfer_analysis_or_tensorflow(tmp_path):
    """Export (the library call and the command), from_pretrained and a prediction (up to the refusal of
    a still image) in a fresh process: none of them loads a training, transfer, analysis or TF module."""
    pth = REPO / "tests/fixtures/checkpoints/tiny_coreecho_best.pth"
    code = f"""
import json, sys
import cv2, numpy as np
import coreecho_jax
from configs import demo
from coreecho_jax.data.video.video_types import NotAnEchoVideoError
from coreecho_jax import cli
config = demo.get_config("quick")
folder = coreecho_jax.export_weights({str(pth)!r}, {str(tmp_path / "a")!r}, config=config)
status = cli.main(["export-weights", "--source={pth}", "--out={tmp_path / "b"}",
                   "--config={REPO / "configs/demo.py"}:quick"])
m = coreecho_jax.from_pretrained(folder)
cv2.imwrite({str(tmp_path / "still.png")!r}, np.full((40, 40), 128, np.uint8))
try:
    m.predict({str(tmp_path / "still.png")!r})
except NotAnEchoVideoError:
    pass
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets")
    or m.startswith({NOT_ON_THE_INFERENCE_PATH!r}))
print(json.dumps({{"loaded": loaded[:10], "status": status, "api": "coreecho_jax.weights.api" in sys.modules}}))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"loaded": [], "status": 0, "api": True}


def _names_used(paths: list[Path]) -> set[str]:
    """Every name the code reads: loaded names, attributes, imported names, identifier-like strings."""
    used = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom):
                used |= {a.name for a in node.names}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
                used.add(node.value)
    return used


def _top_level_names(path: Path) -> list[str]:
    """The functions, classes and constants a module defines at its top level (dunder names left out)."""
    names = []
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [n for n in names if not n.startswith("__")]


def test_every_top_level_name_of_the_package_is_used_somewhere():
    """Dead code goes: each function, class and constant of the package is read by the package, a
    script (main.py, bench/, configs/) or a test. ``main`` (a module's command) is run, not read."""
    code = [*PACKAGE.rglob("*.py"), REPO / "main.py", *(REPO / "bench").glob("*.py")]
    code += [*(REPO / "configs").glob("*.py"), *(REPO / "tests").rglob("*.py")]
    used = _names_used(code)
    dead = [
        f"{path.relative_to(REPO)}: {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name in _top_level_names(path)
        if name != "main" and name not in used
    ]
    assert not dead, "\n".join(dead)


#: The words the transfer wing once branched on; only the records (transfer/tasks.py) and the tables of
#: modes and kinds (transfer/steps.py) may name them.
_TRANSFER_WORDS = {"camus", "hmcqu", "regression", "classification", "probe", "finetune"}


def test_only_the_transfer_records_name_a_dataset_kind_or_mode():
    """A new dataset is a new record (transfer.tasks), never a new branch in the loop, the data step,
    the tables or the evaluator."""
    named = []
    files = [
        *(PACKAGE / "transfer" / f for f in ("loop.py", "data.py", "report.py", "provenance.py")),
        PACKAGE / "evaluation" / "transfer.py",
    ]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and node.value in _TRANSFER_WORDS:
                named.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert not named, "\n".join(named)
