"""Evaluation: inference steps, metrics with bootstrap CIs, the multi-clip evaluator, results files.

``steps`` (jitted predict/embed steps) -> ``multiclip`` (one process's per-video predictions) ->
``evaluator.Evaluator`` (every process's videos gathered, metrics) -> ``results`` (table, strict JSON).
"""
