"""bench/profile_step.py: HLO categorisation, trace reading (exclusive times) and one tiny profiled step."""

from __future__ import annotations

import gzip
import json
import math

import pytest

from bench import profile_step as ps

# A small module as XLA:CPU prints it: the call-stack tables (root frames print parent_frame_id=1,
# children one above their parent's row), a dot fusion, a normalisation fusion, a while loop whose
# body is a depthwise add, a Linear transpose, an AdamW multiply and an op without metadata.
HLO = """\
HloModule jit_stage1_step, is_scheduled=true

FileNames
1 "/repo/coreecho_jax/train/steps.py"
2 "/repo/coreecho_jax/models/depthwise.py"
3 "/venv/flax/nnx/nn/linear.py"
4 "/repo/coreecho_jax/models/layers.py"
5 "/venv/optax/_src/transform.py"
6 "/repo/coreecho_jax/models/uniformer.py"

FunctionNames
1 "stage1_step"
2 "_correlate_valid"
3 "Linear.__call__"
4 "BatchNorm.__call__"
5 "scale_by_adam.<locals>.update_fn"
6 "conv3d"
7 "PatchEmbed.__call__"
8 "_attention_forward"

FileLocations
1 {file_name_id=1 function_name_id=1 line=10 end_line=10 column=1 end_column=9}
2 {file_name_id=2 function_name_id=2 line=20 end_line=20 column=1 end_column=9}
3 {file_name_id=3 function_name_id=3 line=30 end_line=30 column=1 end_column=9}
4 {file_name_id=4 function_name_id=4 line=40 end_line=40 column=1 end_column=9}
5 {file_name_id=5 function_name_id=5 line=50 end_line=50 column=1 end_column=9}
6 {file_name_id=4 function_name_id=6 line=60 end_line=60 column=1 end_column=9}
7 {file_name_id=6 function_name_id=7 line=70 end_line=70 column=1 end_column=9}
8 {file_name_id=6 function_name_id=8 line=80 end_line=80 column=1 end_column=9}

StackFrames
1 {file_location_id=1 parent_frame_id=1}
2 {file_location_id=2 parent_frame_id=2}
3 {file_location_id=3 parent_frame_id=2}
4 {file_location_id=4 parent_frame_id=2}
5 {file_location_id=5 parent_frame_id=2}
6 {file_location_id=7 parent_frame_id=2}
7 {file_location_id=6 parent_frame_id=7}
8 {file_location_id=8 parent_frame_id=2}


%fused_dot (p0: f32[4,8], p1: f32[8,16]) -> f32[4,16] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %p1 = f32[8,16]{1,0} parameter(1)
  %dot.1 = f32[4,16]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(stage1_step)/jvp()/dot_general" stack_frame_id=3}
  %constant.1 = f32[] constant(1)
  %broadcast.1 = f32[4,16]{1,0} broadcast(%constant.1), dimensions={}
  ROOT %add.1 = f32[4,16]{1,0} add(%dot.1, %broadcast.1), metadata={op_name="jit(stage1_step)/jvp()/add" stack_frame_id=4}
}

%fused_norm (p0.1: f32[4,16]) -> f32[4,16] {
  %p0.1 = f32[4,16]{1,0} parameter(0)
  %subtract.1 = f32[4,16]{1,0} subtract(%p0.1, %p0.1), metadata={op_name="jit(stage1_step)/jvp()/sub" stack_frame_id=4}
  %multiply.1 = f32[4,16]{1,0} multiply(%subtract.1, %p0.1), metadata={op_name="jit(stage1_step)/jvp()/mul" stack_frame_id=4}
  ROOT %add.2 = f32[4,16]{1,0} add(%multiply.1, %p0.1), metadata={op_name="jit(stage1_step)/jvp()/add" stack_frame_id=1}
}

%fused_patch (p0.2: f32[2,4,8]) -> f32[2,8,4] {
  %p0.2 = f32[2,4,8]{2,1,0} parameter(0)
  ROOT %transpose.2 = f32[2,8,4]{2,1,0} transpose(%p0.2), dimensions={0,2,1}, metadata={op_name="jit(stage1_step)/jvp()/transpose" stack_frame_id=7}
}

%body (p.1: (s32[], f32[2,4])) -> (s32[], f32[2,4]) {
  %p.1 = (s32[], f32[2,4]{1,0}) parameter(0)
  %gte.0 = s32[] get-tuple-element(%p.1), index=0
  %gte.1 = f32[2,4]{1,0} get-tuple-element(%p.1), index=1
  %add_body.1 = f32[2,4]{1,0} add(%gte.1, %gte.1), metadata={op_name="jit(stage1_step)/jvp()/while/body/add" stack_frame_id=2}
  ROOT %tuple.1 = (s32[], f32[2,4]{1,0}) tuple(%gte.0, %add_body.1)
}

%cond (p.2: (s32[], f32[2,4])) -> pred[] {
  %p.2 = (s32[], f32[2,4]{1,0}) parameter(0)
  %gte.2 = s32[] get-tuple-element(%p.2), index=0
  %constant.2 = s32[] constant(3)
  ROOT %compare.1 = pred[] compare(%gte.2, %constant.2), direction=LT
}

ENTRY %main.1 (a: f32[4,8], b: f32[8,16], t: (s32[], f32[2,4]), v: f32[2,4,8]) -> f32[4,16] {
  %a = f32[4,8]{1,0} parameter(0)
  %b = f32[8,16]{1,0} parameter(1)
  %t = (s32[], f32[2,4]{1,0}) parameter(2)
  %v = f32[2,4,8]{2,1,0} parameter(3)
  %dot_fusion.1 = f32[4,16]{1,0} fusion(%a, %b), kind=kOutput, calls=%fused_dot, metadata={op_name="jit(stage1_step)/jvp()/add" stack_frame_id=4}
  %while.1 = (s32[], f32[2,4]{1,0}) while(%t), condition=%cond, body=%body, metadata={op_name="jit(stage1_step)/jvp()/while" stack_frame_id=2}, backend_config={"known_trip_count":{"n":"3"}}
  %copy.1 = f32[8,16]{0,1} copy(%b), metadata={op_name="jit(stage1_step)/transpose(jvp())/transpose" stack_frame_id=3}
  %multiply.2 = f32[8,16]{1,0} multiply(%b, %b), metadata={op_name="jit(stage1_step)/mul" stack_frame_id=5}
  %transpose.1 = f32[16,4]{1,0} transpose(%dot_fusion.1), dimensions={1,0}
  %dot.2 = f32[4,4]{1,0} dot(%a, %a), lhs_contracting_dims={1}, rhs_contracting_dims={1}, metadata={op_name="jit(stage1_step)/jvp(bhqd,bhkd->bhqk)/dot_general" stack_frame_id=8}
  %patch_fusion.1 = f32[2,8,4]{2,1,0} fusion(%v), kind=kLoop, calls=%fused_patch, metadata={op_name="jit(stage1_step)/jvp()/transpose" stack_frame_id=7}
  ROOT %norm_fusion.1 = f32[4,16]{1,0} fusion(%dot_fusion.1), kind=kLoop, calls=%fused_norm, metadata={op_name="jit(stage1_step)/jvp()/add" stack_frame_id=1}
}
"""  # noqa: E501


def _event(name, tid, ts, dur, run=1, module="jit_stage1_step"):
    args = {"hlo_op": name, "hlo_module": module, "run_id": str(run)}
    return {"ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur, "name": name, "args": args}


TRACE = {
    "displayTimeUnit": "ns",
    "traceEvents": [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 0.0, "dur": 500.0, "name": "ThunkExecutor::Execute"},
        _event("while.1", 1, 0.0, 100.0),
        _event("add_body.1", 1, 10.0, 30.0),
        {"ph": "X", "pid": 1, "tid": 1, "ts": 40.0, "dur": 0.1, "name": "end: add_body.1", "args": {}},
        _event("add_body.1", 1, 50.0, 30.0),
        _event("dot_fusion.1", 2, 0.0, 50.0),  # another thread, in parallel with the loop
        _event("copy.1", 1, 120.0, 20.0),
        _event("multiply.2", 1, 150.0, 10.0),
        _event("transpose.1", 2, 60.0, 5.0),
        _event("patch_fusion.1", 2, 70.0, 6.0),
        _event("norm_fusion.1", 2, 80.0, 15.0),
        _event("mystery.7", 2, 100.0, 4.0),  # not in the HLO text: counted as other
        _event("dot_fusion.1", 2, 200.0, 999.0, module="jit_other"),  # another module: ignored
    ],
}


def test_stack_frames_follow_parents_leaf_first():
    stacks = ps.parse_stack_frames(HLO)
    assert [f.function for f in stacks[2]] == ["_correlate_valid", "stage1_step"]
    assert [f.function for f in stacks[7]] == ["conv3d", "PatchEmbed.__call__", "stage1_step"]
    assert stacks[1][0].line == 10 and len(stacks[1]) == 1
    # A printer that writes the parent's own row (root: 0) gives the same stacks.
    rows = "1 {file_location_id=1 parent_frame_id=0}\n2 {file_location_id=2 parent_frame_id=1}\n"
    text = HLO.split("StackFrames")[0] + "StackFrames\n" + rows + "\n"
    assert [f.function for f in ps.parse_stack_frames(text)[2]] == ["_correlate_valid", "stage1_step"]


def test_categorise_hlo_snippet():
    infos = ps.categorise(HLO)
    cat = {name: info.category for name, info in infos.items()}
    assert cat["dot_fusion.1"] == ps.MATMUL  # the dot inside decides, not the fusion's BatchNorm root
    assert cat["dot.2"] == ps.ATTENTION  # an attention einsum
    assert cat["while.1"] == ps.DEPTHWISE
    assert cat["add_body.1"] == ps.DEPTHWISE
    assert cat["copy.1"] == ps.LAYOUT  # a Linear layer's transpose is data movement
    assert cat["multiply.2"] == ps.OPTIMIZER
    assert cat["transpose.1"] == ps.LAYOUT  # no metadata: by opcode
    assert cat["patch_fusion.1"] == ps.DENSE_CONV  # space-to-depth of a patch embedding stays there
    assert cat["norm_fusion.1"] == ps.NORM  # two BatchNorm ops outvote the root's step frame
    assert infos["copy.1"].backward and not infos["multiply.2"].backward
    assert infos["copy.1"].data_movement and not infos["dot_fusion.1"].data_movement
    assert infos["dot_fusion.1"].kind == "kOutput"
    assert infos["while.1"].source == "depthwise.py:20 _correlate_valid"


def test_op_events_exclusive_time_and_summary(tmp_path):
    events = ps.op_events(TRACE, module="jit_stage1_step")
    assert len(events) == 10
    self_us = {}
    for e in events:
        self_us[e["name"]] = self_us.get(e["name"], 0.0) + e["self"]
    assert self_us["while.1"] == pytest.approx(40.0)  # 100 minus two nested body ops of 30
    assert self_us["add_body.1"] == pytest.approx(60.0)
    assert self_us["dot_fusion.1"] == pytest.approx(50.0)  # the other module's event is not here

    summary = ps.summarise(events, ps.categorise(HLO), steps=2, top=3)
    rows = summary["categories"]
    assert set(rows) == set(ps.CATEGORIES)
    assert rows[ps.DEPTHWISE]["ms"] == pytest.approx(0.05)  # (40 + 60) us over 2 steps
    assert rows[ps.DEPTHWISE]["ops"] == 2
    assert rows[ps.MATMUL]["ms"] == pytest.approx(0.025)
    assert rows[ps.LAYOUT]["ms"] == pytest.approx(0.0125)
    assert rows[ps.LAYOUT]["backward_ms"] == pytest.approx(0.01)
    assert rows[ps.OTHER]["ms"] == pytest.approx(0.002)
    assert summary["unknown_ops"] == ["mystery.7"]
    assert summary["total_op_ms"] == pytest.approx((40 + 60 + 50 + 20 + 10 + 5 + 6 + 15 + 4) / 2000)
    assert sum(r["share"] for r in rows.values()) == pytest.approx(100.0)
    assert [t["name"] for t in summary["top_ops"]] == ["add_body.1", "dot_fusion.1", "while.1"]
    text = ps.format_summary(summary)
    assert ps.DEPTHWISE in text and "add_body.1" in text

    # load_trace reads the newest perfetto_trace.json.gz that jax.profiler.trace writes.
    run = tmp_path / "plugins" / "profile" / "2026_01_01_00_00_00"
    run.mkdir(parents=True)
    with gzip.open(run / "perfetto_trace.json.gz", "wt") as fp:
        json.dump(TRACE, fp)
    assert ps.load_trace(tmp_path) == TRACE


def test_bad_inputs_raise_profile_error(tmp_path):
    with pytest.raises(ps.ProfileError, match="perfetto_trace"):
        ps.load_trace(tmp_path)
    with pytest.raises(ps.ProfileError, match="traceEvents"):
        ps.op_events({"events": []})
    with pytest.raises(ps.ProfileError, match="no HLO instructions"):
        ps.categorise("HloModule empty\n")
    with pytest.raises(ps.ProfileError, match="steps"):
        ps.summarise([], {}, steps=0)


@pytest.mark.slow
def test_tiny_model_profile_end_to_end(tmp_path, capsys):
    out = tmp_path / "profile.json"
    argv = ["--preset", "tiny", "--frames", "8", "--size", "32", "--steps", "1", "--out", str(out)]
    summary = ps.main(argv)
    rows = summary["categories"]
    assert set(rows) == set(ps.CATEGORIES)
    for name, row in rows.items():
        for key in ("ms", "share", "backward_ms", "data_movement_ms"):
            assert math.isfinite(row[key]) and row[key] >= 0, (name, key, row)
    assert sum(r["share"] for r in rows.values()) == pytest.approx(100.0)
    assert rows[ps.DEPTHWISE]["ms"] > 0 and rows[ps.MATMUL]["ms"] > 0
    assert rows[ps.OPTIMIZER]["ms"] > 0 and rows[ps.LOSS]["ms"] > 0
    assert summary["unknown_ops"] == []  # every traced op is found in the compiled module's text
    assert summary["output_finite"] and summary["wall_ms"] > 0
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python -m bench.profile_step --preset tiny")
    assert len(saved["load_start"]) == 3 and len(saved["load_end"]) == 3
    printed = capsys.readouterr().out
    assert "load average at start" in printed and "load average at end" in printed
    assert "traced op time" in printed and ps.DEPTHWISE in printed


def test_tiny_model_forward_profile(capsys):
    argv = [
        "--phase",
        "forward",
        "--batch",
        "2",
        "--preset",
        "tiny",
        "--frames",
        "8",
        "--size",
        "32",
        "--steps",
        "1",
    ]
    summary = ps.main(argv)
    rows = summary["categories"]
    assert summary["phase"] == "forward" and summary["output_finite"]
    assert rows[ps.MATMUL]["ms"] > 0 and rows[ps.DEPTHWISE]["ms"] > 0
    # an eval forward has no backward pass, no loss, no optimizer and no dropout
    for name in (ps.LOSS, ps.OPTIMIZER, ps.DROPOUT):
        assert rows[name]["ms"] == 0, name
    assert all(row["backward_ms"] == 0 for row in rows.values())
    assert summary["unknown_ops"] == []
    assert "eval forward, batch 2 clip(s)" in capsys.readouterr().out


def test_unknown_phase_is_refused():
    with pytest.raises(ps.ProfileError, match="phase must be one of"):
        ps.profile_step(phase="backward")
