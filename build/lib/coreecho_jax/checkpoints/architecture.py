"""Which UniFormer a checkpoint holds, and the config setting that builds it.

A readable checkpoint of another architecture than the configured model (a UniFormer-S ``.pth`` into
``configs/demo.py``'s tiny model, a run of one preset restored by a config of another) is not damage:
the error says what the file holds (from its tensor shapes), what the config builds, and which setting
selects the file's architecture, e.g. ``--config.model.preset=small``, and never advises deleting it.

The architecture is read from shapes only (:func:`key_map.infer_uniformer_config`): depth, dims,
mlp_ratio and input channels. ``head_dim`` is not visible in the weights and is not compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from coreecho_jax.checkpoints.key_map import _LEAF_NAMES, KeyMapError, _torch_shape, infer_uniformer_config
from coreecho_jax.models.uniformer import PRESETS, UniFormerConfig, uniformer_config

#: The fields of :class:`UniFormerConfig` that weights' shapes decide.
SHAPE_FIELDS = ("depth", "dims", "mlp_ratio", "in_chans")
#: Names users know for some presets.
LABELS = {"small": "UniFormer-S", "base": "UniFormer-B"}
#: The leaf (NNX path suffix) that marks a UniFormer in a checkpoint tree.
_ANCHOR = "patch_embed1.proj.kernel"


class ArchitectureMismatchError(KeyMapError):
    """A readable checkpoint holding another UniFormer architecture than the configured model."""


def _shape_key(cfg: UniFormerConfig) -> tuple:
    return tuple(getattr(cfg, f) for f in SHAPE_FIELDS)


def preset_of(cfg: UniFormerConfig) -> str | None:
    """The preset whose depth, dims, mlp_ratio and input channels ``cfg`` has; None when none has."""
    for name in PRESETS:
        if _shape_key(uniformer_config(name)) == _shape_key(cfg):
            return name
    return None


def describe(cfg: UniFormerConfig) -> str:
    """E.g. ``UniFormer-S (preset 'small': depth [3, 4, 8, 3], dims [64, 128, 320, 512])``."""
    shape = f"depth {list(cfg.depth)}, dims {list(cfg.dims)}"
    if cfg.mlp_ratio != UniFormerConfig.mlp_ratio:
        shape += f", mlp_ratio {cfg.mlp_ratio:g}"
    if cfg.in_chans != UniFormerConfig.in_chans:
        shape += f", {cfg.in_chans} input channels"
    name = preset_of(cfg)
    if name is None:
        return f"a UniFormer of no preset ({shape})"
    return f"{LABELS.get(name, 'UniFormer')} (preset '{name}': {shape})"


def setting(cfg: UniFormerConfig) -> str:
    """The command-line setting that builds ``cfg``'s architecture."""
    name = preset_of(cfg)
    if name is not None:
        return f"--config.model.preset={name}"
    # the configs have no depth/dims fields to override on the command line: they go in the file
    text = f"c.model.depth = {tuple(cfg.depth)} and c.model.dims = {tuple(cfg.dims)}"
    if cfg.mlp_ratio != UniFormerConfig.mlp_ratio:
        text += f" and c.model.mlp_ratio = {cfg.mlp_ratio:g}"
    return text + " in the config file (no preset has this architecture)"


def same_architecture(a: UniFormerConfig, b: UniFormerConfig) -> bool:
    return _shape_key(a) == _shape_key(b)


def from_torch_shapes(shapes: Mapping[str, Sequence[int]]) -> UniFormerConfig | None:
    """The architecture of torch-named UniFormer weights (``patch_embed1.proj.weight`` ...), from their
    shapes alone; None when they are not a UniFormer's."""
    # zero-copy stand-ins: infer_uniformer_config reads shapes only; head_dim=1 divides every width
    stand_ins = {k: np.broadcast_to(np.float32(0), tuple(s)) for k, s in shapes.items()}
    try:
        return infer_uniformer_config(stand_ins, head_dim=1)
    except (KeyMapError, ValueError):
        return None


def from_nnx_shapes(shapes: Mapping[str, Sequence[int]]) -> UniFormerConfig | None:
    """The architecture of the UniFormer in a flat NNX tree (``model.encoder.patch_embed1.proj.kernel`` ->
    shape, as a run checkpoint stores it); the shortest path prefix is taken (the model's weights, not
    the optimizer's moments of them). None when the tree holds no UniFormer."""
    prefixes = sorted(
        (k[: -len(_ANCHOR)] for k in shapes if k == _ANCHOR or k.endswith("." + _ANCHOR)), key=len
    )
    if not prefixes:
        return None
    torch_shapes = {}
    for key, shape in shapes.items():
        if not key.startswith(prefixes[0]):
            continue
        *modules, leaf = key[len(prefixes[0]) :].split(".")
        if leaf in _LEAF_NAMES:
            torch_shapes[".".join([*modules, _LEAF_NAMES[leaf]])] = _torch_shape(tuple(shape))
    return from_torch_shapes(torch_shapes)


def pth_contents(encoder: Mapping[str, Any], head: Mapping[str, Any] | None) -> str:
    """What a ``.pth`` holds besides the encoder, for messages."""
    if head is not None:
        return "a CoReEcho checkpoint (encoder and EF regression head)"
    if "head.weight" in encoder:
        classes = int(np.shape(encoder["head.weight"])[0])
        if classes == 400:
            return "a Kinetics-400 UniFormer (encoder and 400-class classifier)"
        return f"a UniFormer with a {classes}-class classifier"
    return "a UniFormer encoder"


def mismatch_message(subject: str, found: UniFormerConfig, expected: UniFormerConfig) -> str:
    """One line: ``subject`` (e.g. ``"<file> holds ..., architecture"``) followed by ``found``, what the
    config builds instead, and the setting that selects ``found``."""
    return (
        f"{subject} {describe(found)}, but the config builds {describe(expected)}. The checkpoint is "
        f"readable, not damaged: to use it, select its architecture with {setting(found)}"
    )


def check_pth_fits(path: Any, encoder: Mapping[str, Any], head: Mapping[str, Any] | None, model: Any) -> None:
    """Raises :class:`ArchitectureMismatchError` (one line) when a ``.pth``'s UniFormer (``encoder``
    state_dict with torch names) has another architecture than ``model`` (a :class:`UniFormer`)."""
    found = from_torch_shapes({k: np.shape(v) for k, v in encoder.items()})
    if found is not None and not same_architecture(found, model.config):
        raise ArchitectureMismatchError(
            mismatch_message(f"{path} holds {pth_contents(encoder, head)}, architecture", found, model.config)
        )
