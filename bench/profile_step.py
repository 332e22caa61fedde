"""Where the stage-1 training step (or the eval forward) spends its time on the CPU: a profile by op type.

Builds the stage-1 step as ``bench/bench_train.py`` does (``steps.stage1_step`` with
``steps.make_optimizer``: encoder + head forward in train mode, Rank-N-Contrast + L1 head loss,
backward, AdamW, one jit) or, with ``--phase forward``, the eval-mode encoder + head forward of a
batch of clips (what ``predict`` runs), compiles it, runs ``--warmup`` steps, then ``--steps`` steps under
``jax.profiler.trace``. Each XLA op the CPU runtime executed is an event of the trace
(``args.hlo_op``); its exclusive time (minus the ops nested in it on the same thread, e.g. a
``while`` loop's body) is charged to a category found in the compiled module's HLO text:

- the Python call stack of each HLO instruction (``stack_frame_id`` metadata, resolved through the
  module's ``StackFrames`` table) names the model part: the depthwise convolutions
  (``models/depthwise.py``), the losses (``losses/``), the optimizer (optax, ``Optimizer.update``),
  normalisation layers, dropout, attention, ``Linear`` layers, the patch embeddings...;
- a fusion is charged like the dot or convolution it contains, else like most of its instructions
  (a backward fusion that recomputes dropout masks inline counts as dropout);
- pure data movement (copy, transpose, concatenate, slice, pad...) outside the depthwise convolutions,
  the patch embeddings, the losses and the optimizer is "copies/transposes (layout)";
- instructions without a call stack fall back to their opcode.

Per category: ms per step, share of the traced op time, number of distinct HLO ops, and the parts of
it in the backward pass (``transpose(...)`` in the op name) and in pure data movement. Ops run on
several threads at once, so the traced op time can exceed the wall time per step (printed next to it).

    python -m bench.profile_step                       # UniFormer-S, 36x112x112, 1 video x 2 views
    python -m bench.profile_step --steps 2 --out profile.json
    python -m bench.profile_step --dropout 0                # the same step without dropout
    python -m bench.profile_step --phase forward --batch 1  # the eval forward of one clip
    python -m bench.profile_step --preset tiny --frames 8 --size 32 --steps 1
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gzip
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench import command_line
from coreecho_jax.errors import CoreEchoError

DEPTHWISE = "depthwise convolution"
DENSE_CONV = "dense convolution (patch embeds)"
MATMUL = "matmul"
ATTENTION = "attention (einsums, softmax)"
NORM = "normalisation"
ELEMENTWISE = "elementwise"
DROPOUT = "dropout masks & RNG"
LOSS = "loss (RnC + L1)"
OPTIMIZER = "optimizer (AdamW, grad norm)"
LAYOUT = "copies/transposes (layout)"
OTHER = "other"
# --phase -> the jitted function's name (its trace module is jit_<name>)
PHASES = ("train", "forward")
MODULES = {"train": "stage1_step", "forward": "forward_step"}
CATEGORIES = (
    DEPTHWISE,
    DENSE_CONV,
    MATMUL,
    ATTENTION,
    NORM,
    ELEMENTWISE,
    DROPOUT,
    LOSS,
    OPTIMIZER,
    LAYOUT,
    OTHER,
)
CATEGORY_NOTES = {
    DEPTHWISE: "3x3x3 / 5x5x5 depthwise convs, forward and hand-written backward (shifted slices)",
    DENSE_CONV: "patch embeddings: space-to-depth + matmul",
    MATMUL: "Linear layers (qkv, proj, MLP), 1x1x1 convs",
    ATTENTION: "q k^T and p v einsums, softmax (stages 3-4)",
    NORM: "BatchNorm, LayerNorm",
    ELEMENTWISE: "GELU, residual adds, pooling",
    DROPOUT: "dropout / drop-path masks (also recomputed inside backward fusions), RNG",
    LOSS: "Rank-N-Contrast and L1 head loss",
    OPTIMIZER: "AdamW update and the gradient norm metric",
    LAYOUT: "copies, transposes, concatenations outside the parts above",
    OTHER: "anything else",
}

# Opcodes that only move data.
DATA_MOVEMENT = frozenset(
    {
        "copy", "transpose", "bitcast", "reshape", "broadcast", "slice", "concatenate", "pad",
        "dynamic-slice", "dynamic-update-slice", "reverse", "gather", "scatter", "convert", "tuple",
        "get-tuple-element", "copy-start", "copy-done", "iota",
    }
)  # fmt: skip
# Opcodes that never cost anything by themselves inside a fusion (ignored when voting).
TRIVIAL = frozenset({"parameter", "constant", "tuple", "get-tuple-element", "bitcast"})
# Categories whose data movement is part of the algorithm (not "layout").
OWN_DATA_MOVEMENT = frozenset({DEPTHWISE, DENSE_CONV, LOSS, OPTIMIZER, DROPOUT})

# Leaf-first rules on (file path, function name) of a call stack; the first frame that matches wins.
_LEAF_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (DROPOUT, re.compile(r"^(hash_bernoulli|_fmix32|\w*Dropout\w*\.\w+|_RandomMask\.\w+|DropPath\.\w+)$")),
    (DROPOUT, re.compile(r"^RngStream\.")),
    (NORM, re.compile(r"^(BatchNorm|LayerNorm|GroupNorm|RMSNorm)\.__call__$|^_compute_stats|^_normalize$")),
    (ATTENTION, re.compile(r"^(_attention_forward|attention_core|_attention_core_fwd|_attention_core_bwd)$")),
    (ATTENTION, re.compile(r"^(Attention\.__call__|dot_product_attention)$")),
    (ELEMENTWISE, re.compile(r"^_gelu$")),
    ("conv3d", re.compile(r"^(conv3d|Conv3d\.__call__)")),
    (MATMUL, re.compile(r"^(Linear|LinearGeneral|Einsum)\.__call__$|^torch_linear")),
    (ELEMENTWISE, re.compile(r"^(CBlock|SABlock|Mlp|CMlp|RegressionHead|UniFormer|CoReEcho)\.")),
)


@dataclasses.dataclass(frozen=True)
class Frame:
    """One Python frame of an HLO instruction's call stack."""

    file: str
    function: str
    line: int


@dataclasses.dataclass
class Instruction:
    """One HLO instruction as the profile needs it."""

    name: str
    opcode: str
    computation: str
    op_name: str = ""
    stack: tuple[Frame, ...] = ()  # leaf first
    kind: str = ""  # fusion kind (kLoop, kInput, kOutput, kCustom) or ''
    calls: tuple[str, ...] = ()  # called computations (fusion body, while body/condition...)


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """Category and description of one HLO op that the runtime executes (a trace event)."""

    name: str
    category: str
    opcode: str
    kind: str
    op_name: str
    source: str  # 'file:line function' of the innermost frame, or ''
    backward: bool
    data_movement: bool


class ProfileError(CoreEchoError, RuntimeError):
    """The trace or the HLO text is not what the profile expects."""


# --------------------------------------------------------------------------------------------------
# HLO text


_TABLE_ROW = re.compile(r"^(\d+) (.*)$")
_COMPUTATION_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) \(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$")


def _fields(text: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\d+)", text))


def parse_stack_frames(text: str) -> dict[int, tuple[Frame, ...]]:
    """``stack_frame_id`` -> call stack (leaf first) from the ``FileNames`` / ``FunctionNames`` /
    ``FileLocations`` / ``StackFrames`` tables of an HLO module's text (empty dict without them).

    The text printer of XLA (jax 0.10) writes ``parent_frame_id`` one above the parent's row number
    (a root frame prints 1); a printer that writes the row itself (root: 0) is detected by its zeros.
    """
    tables: dict[str, dict[int, str]] = {}
    current = None
    for line in text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = tables.setdefault(line, {})
            continue
        m = _TABLE_ROW.match(line) if current is not None else None
        if m:
            current[int(m.group(1))] = m.group(2)
        elif current is not None and line.strip() == "":
            current = None
    if "StackFrames" not in tables:
        return {}
    files = {k: v.strip('"') for k, v in tables.get("FileNames", {}).items()}
    functions = {k: v.strip('"') for k, v in tables.get("FunctionNames", {}).items()}
    locations = {}
    for k, v in tables.get("FileLocations", {}).items():
        f = _fields(v)
        locations[k] = Frame(
            files.get(int(f.get("file_name_id", 0)), "?"),
            functions.get(int(f.get("function_name_id", 0)), "?"),
            int(f.get("line", 0)),
        )
    raw = {k: _fields(v) for k, v in tables["StackFrames"].items()}
    offset = 0 if any(int(f.get("parent_frame_id", 1)) == 0 for f in raw.values()) else 1
    stacks: dict[int, tuple[Frame, ...]] = {}

    def stack(fid: int) -> tuple[Frame, ...]:
        chain, seen = [], set()
        while fid in raw and fid not in seen:
            if fid in stacks:
                chain.extend(stacks[fid])
                break
            seen.add(fid)
            chain.append(locations.get(int(raw[fid].get("file_location_id", 0)), Frame("?", "?", 0)))
            parent = int(raw[fid].get("parent_frame_id", offset)) - offset
            fid = parent if 0 < parent < fid else 0
        return tuple(chain)

    for fid in sorted(raw):
        stacks[fid] = stack(fid)
    return stacks


def _split_shape(rest: str) -> str:
    """The text after an instruction's shape (``rest`` starts with the shape, maybe a tuple)."""
    if rest.startswith("("):
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return rest[i + 1 :].lstrip()
    return rest.split(" ", 1)[1] if " " in rest else ""


def parse_hlo(text: str) -> dict[str, Instruction]:
    """Every instruction of an HLO module's text (all computations), by name."""
    stacks = parse_stack_frames(text)
    out: dict[str, Instruction] = {}
    computation = None
    for line in text.splitlines():
        header = _COMPUTATION_HEADER.match(line)
        if header:
            computation = header.group(2)
            continue
        if computation is None:
            continue
        if line.startswith("}"):
            computation = None
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, rest = m.groups()
        after = _split_shape(rest)
        op = re.match(r"([\w\-]+)\(", after)
        if not op:
            continue
        meta = re.search(r"metadata=\{(.*?)\}(?:,|$)", after)
        meta_text = meta.group(1) if meta else ""
        op_name = re.search(r'op_name="((?:[^"\\]|\\.)*)"', meta_text)
        frame = re.search(r"stack_frame_id=(\d+)", meta_text)
        kind = re.search(r"\bkind=(k\w+)", after)
        calls = re.findall(r"\b(?:calls|body|condition|to_apply)=%?([\w.\-]+)", after)
        out[name] = Instruction(
            name=name,
            opcode=op.group(1),
            computation=computation,
            op_name=op_name.group(1) if op_name else "",
            stack=stacks.get(int(frame.group(1)), ()) if frame else (),
            kind=kind.group(1) if kind else "",
            calls=tuple(calls),
        )
    if not out:
        raise ProfileError("no HLO instructions found in the module text")
    return out


def source_category(stack: tuple[Frame, ...]) -> str | None:
    """The model part a call stack (leaf first) belongs to, or None when no rule applies."""
    files = [f.file.replace("\\", "/") for f in stack]
    functions = [f.function for f in stack]
    if any("/optax/" in f or f.endswith("nnx/training/optimizer.py") for f in files) or any(
        fn.startswith("Optimizer.update") for fn in functions
    ):
        return OPTIMIZER
    if any(f.endswith(("losses/rnc.py", "losses/heads.py")) for f in files):
        return LOSS
    if any(f.endswith("models/depthwise.py") for f in files):
        return DEPTHWISE
    for function in functions:
        for category, pattern in _LEAF_RULES:
            if pattern.search(function):
                if category == "conv3d":
                    return DENSE_CONV if "PatchEmbed.__call__" in functions else MATMUL
                return category
    return None


def _opcode_category(opcode: str) -> str:
    if opcode in ("dot", "convolution"):
        return MATMUL if opcode == "dot" else DENSE_CONV
    if opcode in DATA_MOVEMENT:
        return LAYOUT
    return OTHER


def categorise(hlo_text: str) -> dict[str, OpInfo]:
    """Category of every HLO instruction of a compiled module (``compiled.as_text()``), by name."""
    instructions = parse_hlo(hlo_text)
    by_computation: dict[str, list[Instruction]] = defaultdict(list)
    for ins in instructions.values():
        by_computation[ins.computation].append(ins)

    def body(ins: Instruction) -> list[Instruction]:
        if ins.opcode != "fusion":
            return [ins]
        inner = []
        for c in ins.calls:
            for sub in by_computation.get(c, ()):
                inner.extend(body(sub))
        return inner or [ins]

    infos = {}
    for ins in instructions.values():
        inner = [i for i in body(ins) if i.opcode not in TRIVIAL] or [ins]
        heavy = [i for i in inner if i.opcode in ("dot", "convolution")]
        data_movement = all(i.opcode in DATA_MOVEMENT for i in inner)
        if heavy:
            cats = [source_category(i.stack) or source_category(ins.stack) for i in heavy]
            cat = cats[0] or _opcode_category(heavy[0].opcode)
            if cat in (NORM, ELEMENTWISE, DROPOUT):
                cat = MATMUL
            if heavy[0].opcode == "convolution" and cat == MATMUL:
                cat = DENSE_CONV
        else:
            votes = Counter(c for c in (source_category(i.stack) for i in inner) if c)
            own = source_category(ins.stack)
            if votes:
                best = max(votes.values())
                tied = [c for c in votes if votes[c] == best]
                cat = own if own in tied else min(tied, key=CATEGORIES.index)
            else:
                cat = own or _opcode_category(ins.opcode if ins.opcode != "fusion" else inner[0].opcode)
            if data_movement and cat not in OWN_DATA_MOVEMENT:
                cat = LAYOUT
        leaf = ins.stack[0] if ins.stack else next((i.stack[0] for i in inner if i.stack), None)
        infos[ins.name] = OpInfo(
            name=ins.name,
            category=cat,
            opcode=ins.opcode,
            kind=ins.kind,
            op_name=ins.op_name,
            source=f"{Path(leaf.file).name}:{leaf.line} {leaf.function}" if leaf else "",
            backward="transpose(" in ins.op_name,
            data_movement=data_movement,
        )
    return infos


# --------------------------------------------------------------------------------------------------
# Trace


def load_trace(trace_dir: str | Path) -> dict:
    """The newest ``perfetto_trace.json.gz`` under ``trace_dir`` (written by ``jax.profiler.trace``)."""
    files = sorted(Path(trace_dir).glob("plugins/profile/*/perfetto_trace.json.gz"), key=os.path.getmtime)
    if not files:
        raise ProfileError(f"no plugins/profile/*/perfetto_trace.json.gz under {trace_dir}")
    with gzip.open(files[-1], "rt") as fp:
        return json.load(fp)


def op_events(trace: dict, module: str | None = None) -> list[dict]:
    """XLA op events of a Chrome/Perfetto trace with their exclusive time.

    An op event is a complete event (``ph == 'X'``) with ``args.hlo_op`` (and ``args.hlo_module``
    equal to ``module`` when given). Returns dicts ``name, tid, run_id, ts, dur, self`` (microseconds),
    ``self`` being ``dur`` minus the op events nested in it on the same thread.
    """
    events = trace.get("traceEvents")
    if not isinstance(events, list):
        raise ProfileError("trace has no 'traceEvents' list")
    ops = []
    for e in events:
        args = e.get("args") or {}
        if e.get("ph") != "X" or "hlo_op" not in args:
            continue
        if module is not None and args.get("hlo_module") != module:
            continue
        ops.append(
            {
                "name": args["hlo_op"],
                "tid": e.get("tid"),
                "run_id": args.get("run_id"),
                "ts": float(e["ts"]),
                "dur": float(e["dur"]),
                "self": float(e["dur"]),
            }
        )
    by_thread: dict[Any, list[dict]] = defaultdict(list)
    for op in ops:
        by_thread[op["tid"]].append(op)
    for thread_ops in by_thread.values():
        thread_ops.sort(key=lambda o: (o["ts"], -o["dur"]))
        stack: list[dict] = []
        for op in thread_ops:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= op["ts"]:
                stack.pop()
            if stack:
                stack[-1]["self"] -= op["dur"]
            stack.append(op)
    for op in ops:
        op["self"] = max(op["self"], 0.0)
    return ops


def summarise(events: list[dict], infos: dict[str, OpInfo], steps: int, top: int = 15) -> dict:
    """Per-category and top-op totals (ms per step) of ``events`` over ``steps`` steps."""
    if steps < 1:
        raise ProfileError(f"steps must be >= 1, got {steps}")
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        per_op[e["name"]] += e["self"]
    unknown = sorted(n for n in per_op if n not in infos)
    rows = {c: {"ms": 0.0, "ops": 0, "backward_ms": 0.0, "data_movement_ms": 0.0} for c in CATEGORIES}
    for name, us in per_op.items():
        info = infos.get(name)
        row = rows[info.category if info else OTHER]
        ms = us / 1000 / steps
        row["ms"] += ms
        row["ops"] += 1
        if info and info.backward:
            row["backward_ms"] += ms
        if info and info.data_movement:
            row["data_movement_ms"] += ms
    total = sum(r["ms"] for r in rows.values())
    for r in rows.values():
        r["share"] = 100 * r["ms"] / total if total > 0 else 0.0
    top_ops = []
    for name, us in sorted(per_op.items(), key=lambda kv: -kv[1])[:top]:
        info = infos.get(name)
        top_ops.append(
            {
                "name": name,
                "ms": us / 1000 / steps,
                "share": 100 * us / 1000 / steps / total if total > 0 else 0.0,
                "category": info.category if info else OTHER,
                "opcode": f"{info.opcode}:{info.kind}"
                if info and info.kind
                else (info.opcode if info else "?"),
                "source": info.source if info else "",
                "op_name": info.op_name if info else "",
            }
        )
    return {
        "categories": rows,
        "total_op_ms": total,
        "top_ops": top_ops,
        "op_events": len(events),
        "unknown_ops": unknown,
    }


def format_summary(summary: dict) -> str:
    """The category table and the top ops as text."""
    lines = [
        f"{'category':<32}{'ms/step':>10}{'share %':>9}{'ops':>6}{'bwd ms':>10}{'data-mvt ms':>13}  what",
        "-" * 130,
    ]
    for cat, r in sorted(summary["categories"].items(), key=lambda kv: -kv[1]["ms"]):
        lines.append(
            f"{cat:<32}{r['ms']:>10.1f}{r['share']:>9.1f}{r['ops']:>6}{r['backward_ms']:>10.1f}"
            f"{r['data_movement_ms']:>13.1f}  {CATEGORY_NOTES[cat]}"
        )
    lines.append(f"{'total (traced op time)':<32}{summary['total_op_ms']:>10.1f}{100:>9.1f}")
    lines.append(f"\ntop {len(summary['top_ops'])} ops (exclusive time)")
    lines.append(f"{'op':<36}{'ms/step':>9}{'share %':>9}  {'category':<33}{'opcode':<18}source | op_name")
    for t in summary["top_ops"]:
        lines.append(
            f"{t['name'][:35]:<36}{t['ms']:>9.1f}{t['share']:>9.1f}  {t['category']:<33}{t['opcode'][:17]:<18}"
            f"{t['source']} | {t['op_name']}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Run


def profile_step(
    *,
    preset: str = "small",
    frames: int = 36,
    size: int = 112,
    batch: int = 1,
    steps_: int = 2,
    warmup: int = 1,
    dtype: str = "float32",
    model_overrides: dict[str, Any] | None = None,
    trace_dir: str | Path | None = None,
    top: int = 15,
    phase: str = "train",
) -> dict:
    """Compile the step, run ``warmup`` steps, trace ``steps_`` steps and return :func:`summarise`'s
    dict plus timings (``compile_s``, ``wall_ms`` per step). ``phase='train'``: the stage-1 step
    (``batch`` videos x 2 views); ``'forward'``: the eval-mode encoder + head forward of ``batch``
    clips ``[B, T, H, W, 3]`` (what ``predict`` runs per clip batch). ``model_overrides`` are further
    ``build_coreecho`` keys (e.g. ``{'dropout': 0.0}``)."""
    import jax
    import numpy as np
    from flax import nnx

    from bench import paper_model_config
    from coreecho_jax.models.coreecho import build_coreecho
    from coreecho_jax.train import steps

    if phase not in PHASES:
        raise ProfileError(f"phase must be one of {PHASES}, got {phase!r}")
    model = build_coreecho(paper_model_config(preset=preset, dtype=dtype, **(model_overrides or {})))
    rng = np.random.default_rng(0)
    if phase == "train":
        model.train()
        optimizer = steps.make_optimizer(model, 1e-4, 1e-4)
        batches = [
            {
                "video": rng.normal(size=(batch, 2, frames, size, size, 3)).astype(np.float32),
                "ef": rng.uniform(10, 85, size=(batch,)).astype(np.float32),
            }
            for _ in range(2)
        ]
        spec = steps.LossSpec(temperature=1.0)  # static: given to lower(), not to the compiled call
        jitted, lower_extra, args = steps.stage1_step, (spec,), [(model, optimizer, b) for b in batches]
    else:
        model.eval()
        graphdef, state = nnx.split(model)

        def forward_step(state, clips):
            return nnx.merge(graphdef, state)(clips)

        jitted, lower_extra = jax.jit(forward_step), ()
        clips = [rng.normal(size=(batch, frames, size, size, 3)).astype(np.float32) for _ in range(2)]
        args = [(state, c) for c in clips]
    t0 = time.perf_counter()
    compiled = jitted.lower(*args[0], *lower_extra).compile()
    compile_s = time.perf_counter() - t0
    hlo_text = compiled.as_text()
    infos = categorise(hlo_text)
    if trace_dir is not None:
        Path(trace_dir).mkdir(parents=True, exist_ok=True)
        (Path(trace_dir) / f"{MODULES[phase]}.hlo.txt").write_text(hlo_text)
    for i in range(warmup):
        jax.block_until_ready(compiled(*args[i % 2]))
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0  # XLA ops only: the Python tracer would bloat the trace
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(trace_dir or tmp)
        walls = []
        with jax.profiler.trace(directory, create_perfetto_trace=True, profiler_options=options):
            for i in range(steps_):
                t = time.perf_counter()
                out = jax.block_until_ready(compiled(*args[i % 2]))
                walls.append(time.perf_counter() - t)
        trace = load_trace(directory)
    module = f"jit_{MODULES[phase]}"
    events = op_events(trace, module=module)
    if not events:
        raise ProfileError(f"the trace holds no op events of {module} (was the CPU tracer on?)")
    runs = {e["run_id"] for e in events}
    if len(runs) != steps_:
        print(f"warning: {len(runs)} traced executions for {steps_} steps", file=sys.stderr)
    summary = summarise(events, infos, steps_, top=top)
    summary.update(
        compile_s=compile_s,
        wall_ms=1000 * float(np.mean(walls)),
        wall_ms_each=[1000 * w for w in walls],
        phase=phase,
        output_finite=bool(np.all(np.isfinite(np.asarray(out["loss"] if phase == "train" else out[0])))),
    )
    return summary


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", help="UniFormer preset (small: UniFormer-S)")
    p.add_argument("--frames", type=int, default=36)
    p.add_argument("--size", type=int, default=112)
    p.add_argument(
        "--phase", default="train", choices=PHASES, help="train: the stage-1 step; forward: eval forward"
    )
    p.add_argument(
        "--batch", type=int, default=1, help="train: videos per step (2 clips each); forward: clips"
    )
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument(
        "--dropout", type=float, help="encoder dropout rate (default: the preset's, 0.1 for small)"
    )
    p.add_argument("--dropout-rng", choices=["hash", "jax"], help="dropout mask generator (default: hash)")
    p.add_argument("--steps", type=int, default=2, help="traced steps")
    p.add_argument("--warmup", type=int, default=1, help="untraced steps after compilation")
    p.add_argument("--top", type=int, default=15, help="individual ops listed")
    p.add_argument(
        "--trace-dir", help="keep the trace and the HLO text (stage1_step.hlo.txt) here (default: a temp dir)"
    )
    p.add_argument("--out", help="write the summary as JSON here")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        p.error("--steps and --batch must be >= 1")

    import jax

    overrides = {
        k: v for k, v in {"dropout": args.dropout, "dropout_rng": args.dropout_rng}.items() if v is not None
    }
    load0 = os.getloadavg()
    command = command_line("bench.profile_step", argv)
    header = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores "
        f"({os.cpu_count()} in the machine)",
        "backend": f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
        "jax": jax.__version__,
        "config": f"preset={args.preset} clips {args.frames}x{args.size}x{args.size} "
        + (
            f"stage-1 step, batch {args.batch} video(s) x 2 views = {2 * args.batch} clips, {args.dtype}"
            if args.phase == "train"
            else f"eval forward, batch {args.batch} clip(s), {args.dtype}"
        )
        + "".join(f", {k}={v}" for k, v in overrides.items()),
    }
    for k, v in header.items():
        print(f"# {k}: {v}")
    print(f"# load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    summary = profile_step(
        preset=args.preset,
        frames=args.frames,
        size=args.size,
        batch=args.batch,
        steps_=args.steps,
        warmup=args.warmup,
        dtype=args.dtype,
        model_overrides=overrides,
        trace_dir=args.trace_dir,
        top=args.top,
        phase=args.phase,
    )
    load1 = os.getloadavg()
    summary.update(header, load_start=load0, load_end=load1)
    print(f"# compile {summary['compile_s']:.1f} s; {args.steps} traced step(s)\n")
    print(format_summary(summary))
    print(
        f"\ntraced op time {summary['total_op_ms']:.1f} ms/step vs wall {summary['wall_ms']:.1f} ms/step "
        f"(ratio {summary['total_op_ms'] / summary['wall_ms']:.2f}: ops on several threads overlap; "
        f"dispatch and idle time are not op time)"
    )
    if summary["unknown_ops"]:
        print(f"ops missing from the HLO text (counted as other): {', '.join(summary['unknown_ops'][:10])}")
    print(f"# load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1, default=float))
        print(f"# wrote {args.out}")
    return summary


if __name__ == "__main__":
    main()
