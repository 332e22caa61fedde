"""A run config checked once, before any data or model work: one line per problem.

``check_config(config)`` raises :class:`~coreecho_jax.errors.ConfigError` whose message holds one line
per problem (``stage1.lr = -0.1: must be > 0``), so a run with three mistakes says all three at once.
``check_overrides(config, names)`` does the same for ``--config.<name>=...`` overrides that name no
field (ml_collections would otherwise fail deep inside flag parsing). Ranges that the model owns (the
UniFormer's dropout, dtype, depthwise implementation, ...) are checked by building its
:class:`~coreecho_jax.models.uniformer.UniFormerConfig`, so each rule has one home.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ml_collections
from ml_collections.config_flags import config_path

from coreecho_jax.errors import ConfigError

_MISSING = object()

# (field, test, what the test asks). Every field a run reads is listed once; ranges are what the code
# needs (a batch of 1 video has no rank pairs for RnC; the head's BatchNorm needs 2 samples in stage 2).
_Rule = tuple[str, Callable[[Any], bool], str]


def _int(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_int(v) and v >= low), f"must be an integer >= {low}"


def _positive() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_number(v) and v > 0), "must be > 0"


def _non_negative() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_number(v) and v >= 0), "must be >= 0"


def _probability() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_number(v) and 0 <= v < 1), "must be in [0, 1)"


def _one_of(choices: Sequence[Any]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), f"must be one of {', '.join(repr(c) for c in choices)}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


RULES: tuple[_Rule, ...] = (
    ("seed", *_int(0)),
    ("data.frames", *_int(1)),
    ("data.stride", *_int(1)),
    ("data.pad", *_int(0)),
    ("data.image_size", *_int(1)),
    ("data.channels", *_one_of((1, 3))),
    ("data.shuffle_buffer", *_int(1)),
    ("data.synthetic.n_videos", *_int(3)),  # one video at least in each of train, val and test
    ("data.synthetic.seed", *_int(0)),
    ("model.head_dropout", *_probability()),
    ("loss.temperature", *_positive()),
    ("loss.rnc_weight", *_non_negative()),
    ("stage1.epochs", *_int(1)),
    ("stage1.batch_size", *_int(1)),
    ("stage1.lr", *_positive()),
    ("stage1.weight_decay", *_non_negative()),
    ("stage1.lr_decay_epoch", *_int(0)),
    ("stage1.lr_decay_rate", *_positive()),
    ("stage2.epochs", *_int(1)),
    ("stage2.batch_size", *_int(2)),  # the head's BatchNorm normalises over the batch
    ("stage2.lr", *_positive()),
    ("stage2.weight_decay", *_non_negative()),
    ("eval.n_clips", *_int(1)),
    ("eval.batch_size", *_int(1)),
    ("eval.bootstrap", *_int(0)),
    ("eval.seed", *_int(0)),
    (
        "eval.interval_level",
        lambda v: _is_number(v) and 0 < v < 1,
        "must be in (0, 1), e.g. 0.9: 90 % intervals",
    ),
    ("run.log_every", *_int(1)),
    ("run.max_steps_per_epoch", *_int(0)),
    ("data.augment", lambda v: isinstance(v, bool), "must be True or False"),
    ("data.independent_views", lambda v: isinstance(v, bool), "must be True or False"),
)


def _even(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_int(v) and v >= low and v % 2 == 0), f"must be an even integer >= {low}"


def _fraction() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_number(v) and 0 < v <= 1), "must be in (0, 1]"


# The rules of a transfer config (configs/camus.py, configs/hmcqu.py), which has no stage1/stage2/loss.
TRANSFER_RULES: tuple[_Rule, ...] = (
    ("seed", *_int(0)),
    ("task", *_one_of(("camus", "hmcqu", "custom_regression", "custom_classification"))),
    ("data.on_error", *_one_of(("skip", "raise"))),
    ("data.n_folds", *_int(2)),
    ("data.frames", *_even(2)),  # the UniFormer stem halves time
    ("data.image_size", *_int(32)),
    ("data.crop_fraction", *_fraction()),
    ("data.augment", *_one_of((True, False))),
    ("data.affine_degrees", *_non_negative()),
    ("data.affine_translate", *_probability()),
    ("data.synthetic.n_videos", *_int(10)),
    ("data.synthetic.seed", *_int(0)),
    ("data.synthetic.size", *_int(32)),
    ("model.head_dropout", *_probability()),
    ("transfer.mode", *_one_of(("probe", "finetune"))),
    ("transfer.probe_random_encoder", *_one_of((True, False))),
    ("probe.epochs", *_int(1)),
    ("probe.batch_size", *_int(2)),  # the head's BatchNorm normalises over the batch
    ("probe.lr", *_positive()),
    ("probe.weight_decay", *_non_negative()),
    ("finetune.epochs", *_int(1)),
    ("finetune.batch_size", *_int(2)),
    ("finetune.lr", *_positive()),
    ("finetune.weight_decay", *_non_negative()),
    ("eval.batch_size", *_int(1)),
    ("eval.threshold", *_fraction()),
    ("eval.threshold_inclusive", *_one_of((True, False))),
    ("run.max_steps_per_epoch", *_int(0)),
)
#: ``load_echo_video``'s crop modes (``data.video.video_io.CROP_MODES``, tested equal): a manifest
#: cohort's ``data.crop``.
CROP_MODES = ("auto", "region", "sector", "none")
#: The rules of a manifest cohort (configs/custom.py), of either kind.
_CUSTOM_RULES: tuple[_Rule, ...] = (
    ("data.fold_seed", *_int(0)),
    ("data.manifest", lambda v: isinstance(v, str), "must be a path (the manifest CSV, or its folder)"),
    ("data.crop", *_one_of(CROP_MODES)),
    (
        "eval.interval_level",
        lambda v: _is_number(v) and 0 < v < 1,
        "must be in (0, 1), e.g. 0.9: 90 % intervals",
    ),
)
#: The rules of the fields only one transfer dataset has (configs/camus.py, configs/hmcqu.py, configs/custom.py).
TASK_RULES: dict[str, tuple[_Rule, ...]] = {
    "hmcqu": (("data.fold_seed", *_int(0)),),
    "custom_regression": _CUSTOM_RULES,
    "custom_classification": _CUSTOM_RULES,
}
#: The fold schemes of each transfer dataset (``data.folds``).
FOLD_SCHEMES = {
    "camus": ("official", "split_files"),
    "hmcqu": ("shipped", "stratified"),
    "custom_regression": ("auto", "stratified"),
    "custom_classification": ("auto", "stratified"),
}


#: Transfer clip-preparation switches a config may carry (HMC-QU's [21] protocol; CAMUS uses the
#: defaults of ``data.transfer.cycles.CycleSpec``): checked when present. The same values as
#: ``data.transfer.cycles.SPATIAL``/``TIME_SAMPLING`` and ``data.transfer.hmcqu.CYCLE_FRAMES`` (tested), written here
#: because the config check imports no data code.
TRANSFER_OPTIONAL_CHOICES = {
    "data.spatial": ("ref21", "area"),
    "data.time_sampling": ("centres", "ends"),
    "data.cycle_frames": ("ref21", "inclusive"),
}


def is_transfer(config: ml_collections.ConfigDict) -> bool:
    """A transfer config (CAMUS / HMC-QU) rather than a CoReEcho training config."""
    return isinstance(config, ml_collections.ConfigDict) and "transfer" in config


def _transfer_problems(config: ml_collections.ConfigDict) -> list[str]:
    problems = _rule_problems(config, TRANSFER_RULES, "configs/camus.py")
    task = get_field(config, "task", None)
    example = (
        "configs/custom.py"
        if task in ("custom_regression", "custom_classification")
        else f"configs/{task}.py"
    )
    problems += _rule_problems(config, TASK_RULES.get(task, ()), example)
    if task in ("custom_regression", "custom_classification"):
        problems += _manifest_problems(config)
    for name, choices in TRANSFER_OPTIONAL_CHOICES.items():
        value = get_field(config, name, None)
        if value is not None and value not in choices:
            problems.append(f"{name} = {value!r}: must be one of {', '.join(map(repr, choices))}")
    for name in ("data.mean", "data.std"):
        value = get_field(config, name, None)
        if not (
            isinstance(value, list | tuple) and len(value) in (1, 3) and all(_is_number(v) for v in value)
        ):
            problems.append(
                f"{name} = {value!r}: must be 1 or 3 numbers (0..255 scale), e.g. (40.9, 40.9, 40.9)"
            )
    std = get_field(config, "data.std", None)
    if isinstance(std, list | tuple) and any(_is_number(v) and v <= 0 for v in std):
        problems.append(f"data.std = {std!r}: every value must be > 0")
    scale = get_field(config, "data.affine_scale", None)
    if not (
        isinstance(scale, list | tuple) and len(scale) == 2 and all(_is_number(v) and v > 0 for v in scale)
    ):
        problems.append(f"data.affine_scale = {scale!r}: must be two numbers > 0 (low, high)")
    elif scale[0] > scale[1]:
        problems.append(f"data.affine_scale = {tuple(scale)!r}: low must be <= high")
    folds = FOLD_SCHEMES.get(task, ())
    if folds and get_field(config, "data.folds", None) not in folds:
        problems.append(f"data.folds = {get_field(config, 'data.folds', None)!r}: must be one of {folds}")
    return problems + _model_problems(config)


def _manifest_problems(config: ml_collections.ConfigDict) -> list[str]:
    """A manifest cohort reads ``data.manifest``, unless the synthetic demo writes its own."""
    manifest = get_field(config, "data.manifest", "")
    synthetic = get_field(config, "data.synthetic.enabled", False)
    if not isinstance(manifest, str):
        return []
    if not manifest and not synthetic:
        return ["data.manifest is empty: pass --config.data.manifest=<your manifest CSV> (path, label, ...)"]
    if manifest and synthetic:
        return [
            f"data.manifest = {manifest!r} with data.synthetic.enabled = True: the synthetic demo writes and "
            "reads its own manifest; drop one of them"
        ]
    return []


def _rule_problems(config: ml_collections.ConfigDict, rules: Sequence[_Rule], example: str) -> list[str]:
    problems = []
    for name, test, expected in rules:
        value = get_field(config, name, None)
        if value is None:
            problems.append(f"{name}: missing (every run config has it; see {example})")
        elif not test(value):
            problems.append(f"{name} = {value!r}: {expected}")
    return problems


def parse_stages(value: Any) -> list[int]:
    """``run.stages`` ("1,2", "1", "2") as a sorted list; ConfigError unless it lists 1 and/or 2."""
    try:
        stages = sorted({int(s) for s in str(value).split(",") if s.strip()})
    except ValueError:
        stages = []
    if not stages or any(s not in (1, 2) for s in stages):
        raise ConfigError(f"run.stages = {value!r}: must list 1 and/or 2, e.g. '1,2'")
    return stages


def get_field(config: ml_collections.ConfigDict, name: str, default: Any = _MISSING) -> Any:
    """``config`` at the dotted ``name`` (``"stage1.lr"``); ``default`` (or KeyError) when absent."""
    node: Any = config
    for part in name.split("."):
        if not isinstance(node, ml_collections.ConfigDict | dict) or part not in node:
            if default is _MISSING:
                raise KeyError(name)
            return default
        node = node[part]
    return node


def config_problems(config: ml_collections.ConfigDict) -> list[str]:
    """Every problem of ``config``, one line each (empty: the config is fine)."""
    if not isinstance(config, ml_collections.ConfigDict):
        return [f"the config must be an ml_collections.ConfigDict, got {type(config).__name__}"]
    if is_transfer(config):
        return _transfer_problems(config) + run_problems(config)
    problems = _rule_problems(config, RULES, "configs/echonet.py") + run_problems(config)
    try:
        stages = parse_stages(get_field(config, "run.stages", ""))
    except ConfigError as e:
        problems.append(str(e))
    else:
        if stages == [2] and not get_field(config, "model.init_from", ""):
            problems.append(
                "run.stages = '2' needs model.init_from (a stage-1 run's workdir or best checkpoint)"
            )
    return problems + _model_problems(config) + _loss_problems(config)


def is_host_port(value: Any) -> bool:
    """``"host:port"`` with a port in 1..65535 (``"node001:61000"``, ``"[::1]:1234"``)."""
    host, colon, port = str(value).rpartition(":")
    return bool(host and colon and port.isdigit() and 0 < int(port) < 65536) and not any(
        c.isspace() for c in str(value)
    )


def run_problems(config: ml_collections.ConfigDict) -> list[str]:
    """The multi-host fields of ``config.run`` (no JAX: checked before the multi-host start). Absent
    fields (configs written before they existed) read as unset: -1 and ""."""
    distributed = get_field(config, "run.distributed", False)
    coordinator = get_field(config, "run.coordinator", "")
    num = get_field(config, "run.num_processes", -1)
    pid = get_field(config, "run.process_id", -1)
    problems = []
    if not isinstance(distributed, bool):
        problems.append(f"run.distributed = {distributed!r}: must be True or False")
    if not isinstance(coordinator, str) or (coordinator and not is_host_port(coordinator)):
        problems.append(f"run.coordinator = {coordinator!r}: must be HOST:PORT of process 0, or '' (unset)")
    if not (_is_int(num) and (num == -1 or num >= 1)):
        problems.append(f"run.num_processes = {num!r}: must be an integer >= 1, or -1 (unset)")
    if not (_is_int(pid) and pid >= -1):
        problems.append(f"run.process_id = {pid!r}: must be an integer >= 0, or -1 (unset)")
    elif _is_int(num) and num >= 1 and pid >= num:
        problems.append(f"run.process_id = {pid}: must be < run.num_processes = {num}")
    given = [
        f"run.{k}"
        for k, v in (("coordinator", coordinator), ("num_processes", num), ("process_id", pid))
        if v not in ("", -1)
    ]
    if distributed is False and given:
        problems.append(
            f"{', '.join(given)} set but run.distributed = False: set --config.run.distributed=True"
        )
    return problems


def check_run(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError with one line per problem of the multi-host fields (:func:`run_problems`)."""
    problems = run_problems(config)
    if problems:
        raise ConfigError("\n".join(problems))


def _model_problems(config: ml_collections.ConfigDict) -> list[str]:
    """``config.model`` and the clip size, checked by the model's own config (import deferred: jax)."""
    from coreecho_jax.models import coreecho, rngs, uniformer

    model = dict(get_field(config, "model", {}))
    problems = []
    unknown = sorted(set(model) - set(coreecho.MODEL_CONFIG_KEYS) - {"init_from", "seed"})
    if unknown:
        problems.append(f"model: unknown fields {unknown}; known: {sorted(coreecho.MODEL_CONFIG_KEYS)}")
    if model.get("rng_impl") not in rngs.RNG_IMPLS:
        problems.append(f"model.rng_impl = {model.get('rng_impl')!r}: must be one of {rngs.RNG_IMPLS}")
    encoder_fields = {f.name for f in dataclasses.fields(uniformer.UniFormerConfig)}
    overrides = {k: v for k, v in model.items() if k in encoder_fields and v is not None}
    try:
        encoder = uniformer.uniformer_config(str(model.get("preset")), **overrides)
        uniformer.resolve_attention(encoder.attention, encoder.compute_dtype, encoder.head_dim)
    except (ValueError, TypeError) as e:
        return [*problems, f"model: {e}"]
    size = get_field(config, "data.image_size", None)
    frames = get_field(config, "data.frames", None)
    if _is_int(size) and _is_int(frames) and size > 0 and frames > 0:
        t, h, w, _ = uniformer.stage_shapes(encoder, frames, size, size)[-1]
        if min(t, h, w) < 1:
            problems.append(
                f"data.image_size = {size}: the UniFormer downsamples 32x; it needs at least 32 pixels"
            )
    return problems


def _loss_problems(config: ml_collections.ConfigDict) -> list[str]:
    from coreecho_jax.losses import rnc

    value = get_field(config, "loss.implementation", None)
    if value not in rnc.IMPLEMENTATIONS:
        return [f"loss.implementation = {value!r}: must be one of {rnc.IMPLEMENTATIONS}"]
    return []


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError with one line per problem of ``config``; returns quietly when it is fine."""
    problems = config_problems(config)
    if problems:
        raise ConfigError("\n".join(problems))


def override_problems(config: ml_collections.ConfigDict, names: Iterable[str]) -> list[str]:
    """One line per ``--config.<name>`` override that names no field of ``config``."""
    problems = []
    for name in names:
        try:
            config_path.get_value(name, config)
        except (AttributeError, KeyError, IndexError, ValueError):
            problems.append(f"--config.{name}: no such config field{_suggestion(config, name)}")
    return problems


def check_overrides(config: ml_collections.ConfigDict, names: Iterable[str]) -> None:
    """Raises ConfigError naming each unknown ``--config.<name>`` override (one line each)."""
    problems = override_problems(config, names)
    if problems:
        raise ConfigError("\n".join(problems))


def _suggestion(config: ml_collections.ConfigDict, name: str) -> str:
    """'; did you mean stage1.lr?' from the field names of the deepest existing parent."""
    *parents, leaf = name.split(".")
    node: Any = config
    known_path = []
    for part in parents:
        if isinstance(node, ml_collections.ConfigDict) and part in node:
            node = node[part]
            known_path.append(part)
        else:
            leaf = part
            break
    if not isinstance(node, ml_collections.ConfigDict):
        return ""
    prefix = ".".join(known_path) + "." if known_path else ""
    close = difflib.get_close_matches(leaf, list(node.keys()), n=1)
    if close:
        return f"; did you mean {prefix}{close[0]}?"
    return f"; {prefix.rstrip('.') or 'the config'} has {', '.join(sorted(node.keys()))}"
