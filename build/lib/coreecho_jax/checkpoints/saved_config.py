"""The config a checkpoint was trained with, for predicting or evaluating with it.

A model only makes sense on clips like the ones it was trained on. A run workdir records its config in
``config.json``; :func:`inference_config` takes the clip settings (:data:`CLIP_FIELDS`) and the model
from there, and refuses a given config that says otherwise on a clip setting, so that a 36-frame
112 px config cannot feed a model trained on 16-frame 64 px clips. A ``.pth`` file or an imported
Orbax folder records no clip settings: the given config is used as it is.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from coreecho_jax.errors import ConfigError

#: The file a run writes into its workdir: the resolved config as JSON.
RUN_CONFIG_FILE = "config.json"
#: Fields that fix what a clip looks like to the model: length, temporal stride, size, colour.
CLIP_FIELDS = ("data.frames", "data.stride", "data.image_size", "data.channels")
#: Values of fields that a run saved before the field existed had: the pipeline then stored grey frames.
LEGACY_VALUES = {"data.channels": 1}
#: Model fields that choose how the model computes, not what: taken from the given config.
MODEL_RUNTIME_FIELDS = ("dtype", "remat", "depthwise", "attention")

_ABSENT = object()


def _get(tree: Mapping[str, Any] | ml_collections.ConfigDict, dotted: str) -> Any:
    """``tree["data"]["frames"]`` for ``"data.frames"`` (a dict or a ConfigDict), or ``_ABSENT``."""
    node: Any = tree
    for key in dotted.split("."):
        if not isinstance(node, Mapping | ml_collections.ConfigDict) or key not in node:
            return _ABSENT
        node = node[key]
    return node


def read_run_config(checkpoint: str | Path) -> dict | None:
    """The saved config of a run workdir as a dict; None when ``checkpoint`` is not one (no ``config.json``).

    Raises:
        ConfigError: ``config.json`` exists but is not a JSON object.
    """
    path = Path(checkpoint) / RUN_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); it should hold the run's config") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path}: expected a JSON object (the run's config), got {type(saved).__name__}")
    return saved


def inference_config(config: ml_collections.ConfigDict, checkpoint: str | Path) -> ml_collections.ConfigDict:
    """``config`` with the clip settings and the model of the run that wrote ``checkpoint``.

    For a run workdir (it holds ``config.json``): each of :data:`CLIP_FIELDS` comes from the saved
    config (a field the run saved before it existed takes :data:`LEGACY_VALUES`); the model is the
    saved ``model`` section, except :data:`MODEL_RUNTIME_FIELDS`, which stay the given config's. Every
    other field (data paths, ``eval.*``) stays the given config's. For anything else (a ``.pth`` file,
    an imported folder) a copy of ``config`` is returned.

    Args:
        config: the config given on the command line.
        checkpoint: what ``--checkpoint`` (or ``--workdir``) names.

    Returns:
        A new unlocked ``ConfigDict``; ``config`` is not changed.

    Raises:
        ConfigError: the given config sets a clip field to another value than the run used; the
            message names each field with the run's value and the given one.
    """
    out = copy.deepcopy(config)
    out.unlock()
    saved = read_run_config(checkpoint)
    if saved is None:
        return out
    conflicts = []
    for field in CLIP_FIELDS:
        value, given = _get(saved, field), _get(out, field)
        if value is _ABSENT:
            value = LEGACY_VALUES.get(field, _ABSENT)
            if value is _ABSENT:
                continue
        elif given is not _ABSENT and given != value:
            conflicts.append(f"{field}={value} (the given config has {given})")
            continue
        section, leaf = field.split(".")
        out[section][leaf] = value
    if conflicts:
        raise ConfigError(
            f"{checkpoint}: the run was trained with {', '.join(conflicts)}; its model only fits clips like "
            f"its own: use the config the run was trained with ({RUN_CONFIG_FILE} in the run lists every "
            f"value) or set these fields to the run's values"
        )
    if isinstance(saved.get("model"), Mapping):
        model = ml_collections.ConfigDict(saved["model"])
        for field in MODEL_RUNTIME_FIELDS:
            if field in out.model:
                model[field] = out.model[field]
        out.model = model
    return out
