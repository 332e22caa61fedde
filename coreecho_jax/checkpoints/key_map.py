"""Exhaustive PyTorch -> Flax NNX key map for UniFormer and the CoReEcho head.

Input: a ``Mapping[str, np.ndarray]`` keyed by torch ``state_dict`` names, in torch layouts (what
:mod:`coreecho_jax.checkpoints.torch_pth` returns, or ``np.load`` of the uniformer fixtures).

The map is derived from the model itself: each ``nnx.Param`` / ``nnx.BatchStat`` at NNX path
``a.b.<leaf>`` corresponds to the torch key ``a.b.<name>`` with ``kernel``/``scale`` -> ``weight``,
``bias`` -> ``bias``, ``mean`` -> ``running_mean``, ``var`` -> ``running_var`` (``nnx.List`` indices
become ``.0``, ``.1``, ...; optional ``renames`` map leading path elements, e.g. the head's ``norm1`` ->
``0``). Layouts, chosen by the parameter's rank:

- 5-D Conv3d weight ``[out, in/groups, kt, kh, kw]`` -> kernel ``[kt, kh, kw, in/groups, out]``;
- 2-D Linear weight ``[out, in]`` -> kernel ``[in, out]``;
- 1-D vectors (biases, norm affine, running statistics) unchanged.

Loading is all-or-nothing and exhaustive: every target variable must find its key with the expected
shape (errors name the key and both shapes), and every source key must be used or match an ``ignore``
pattern (``fnmatch`` syntax); the variables are only written when all checks pass.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from coreecho_jax.errors import CheckpointError
from coreecho_jax.models.coreecho import CoReEcho
from coreecho_jax.models.head import RegressionHead
from coreecho_jax.models.layers import BatchNorm
from coreecho_jax.models.uniformer import PRESETS, UniFormer, UniFormerConfig

# Torch keys that a UniFormer load may leave unused: BatchNorm step counters (no NNX counterpart) and
# the Kinetics-400 classifier / CoReEcho's dead Linear(512, 1) head when the model has no classifier.
# A model *with* a classifier always consumes head.weight / head.bias.
UNIFORMER_IGNORE = frozenset({"*num_batches_tracked", "head.weight", "head.bias"})
HEAD_IGNORE = frozenset({"*num_batches_tracked"})
# CoReEcho's regressor is an nn.Sequential: 0 BatchNorm1d, 1 Dropout, 2 Linear, 3 BatchNorm1d, 4 GELU,
# 5 Dropout, 6 Linear.
HEAD_RENAMES: Mapping[str, str] = {"norm1": "0", "fc1": "2", "norm2": "3", "fc2": "6"}

_LEAF_NAMES = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}


class KeyMapError(CheckpointError):
    """A checkpoint does not fit the model: missing, unexpected or mis-shaped keys."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One NNX variable and how its torch counterpart maps onto it."""

    path: tuple[Any, ...]  # NNX path, e.g. ('blocks3', 1, 'attn', 'qkv', 'kernel')
    variable: nnx.Variable
    torch_shape: tuple[int, ...]

    def from_torch(self, array: np.ndarray) -> np.ndarray:
        return _torch_to_nnx_layout(array)

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        return _nnx_to_torch_layout(array)


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What a load used: ``loaded`` torch keys (in model order) and ``ignored`` ones (sorted)."""

    loaded: tuple[str, ...]
    ignored: tuple[str, ...]


# NNX axis k holds torch axis _TO_NNX[rank][k]; ranks not listed keep their layout.
_TO_NNX = {
    5: (2, 3, 4, 1, 0),  # Conv3d [out, in/groups, kt, kh, kw] -> [kt, kh, kw, in/groups, out]
    2: (1, 0),  # Linear [out, in] -> [in, out]
}
_TO_TORCH = {rank: tuple(int(i) for i in np.argsort(perm)) for rank, perm in _TO_NNX.items()}


def _torch_to_nnx_layout(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, _TO_NNX[a.ndim]) if a.ndim in _TO_NNX else a


def _nnx_to_torch_layout(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, _TO_TORCH[a.ndim]) if a.ndim in _TO_TORCH else a


def _torch_shape(nnx_shape: tuple[int, ...]) -> tuple[int, ...]:
    perm = _TO_TORCH.get(len(nnx_shape))
    return tuple(nnx_shape[i] for i in perm) if perm else tuple(nnx_shape)


def _torch_prefix(path: tuple[Any, ...], renames: Mapping[str, str]) -> str:
    parts = [str(p) for p in path]
    if parts and parts[0] in renames:
        parts[0] = renames[parts[0]]
    return ".".join(parts)


def _iter_variables(module: nnx.Module) -> Iterator[tuple[tuple[Any, ...], nnx.Variable]]:
    for path, node in nnx.iter_graph(module):
        if isinstance(node, (nnx.Param, nnx.BatchStat)):
            yield tuple(path), node


def torch_to_nnx_map(module: nnx.Module, *, renames: Mapping[str, str] | None = None) -> dict[str, Target]:
    """Map every torch key the module needs to its NNX :class:`Target` (works on abstract modules)."""
    renames = dict(renames or {})
    out: dict[str, Target] = {}
    for path, var in _iter_variables(module):
        leaf = str(path[-1])
        if leaf not in _LEAF_NAMES:
            raise KeyMapError(f"no torch name for NNX variable {'.'.join(map(str, path))}")
        key = _torch_prefix(path[:-1], renames) + "." + _LEAF_NAMES[leaf]
        if key in out:
            raise KeyMapError(f"two NNX variables map to the torch key {key}")
        out[key] = Target(path=path, variable=var, torch_shape=_torch_shape(tuple(var.shape)))
    return out


def torch_state_shapes(
    module: nnx.Module, *, renames: Mapping[str, str] | None = None, num_batches_tracked: bool = True
) -> dict[str, tuple[int, ...]]:
    """The torch ``state_dict`` key -> shape that corresponds to ``module`` (the inverse map).

    With ``num_batches_tracked`` each BatchNorm also contributes its ``<prefix>.num_batches_tracked``
    scalar, so the key set equals the torch model's ``state_dict`` keys."""
    shapes = {k: t.torch_shape for k, t in torch_to_nnx_map(module, renames=renames).items()}
    if num_batches_tracked:
        for path, node in nnx.iter_graph(module):
            if isinstance(node, BatchNorm):
                shapes[_torch_prefix(tuple(path), dict(renames or {})) + ".num_batches_tracked"] = ()
    return shapes


def export_torch_state(
    module: nnx.Module, *, renames: Mapping[str, str] | None = None
) -> dict[str, np.ndarray]:
    """The module's parameters and batch statistics as a torch-named, torch-layout dict of float32 arrays
    (without ``num_batches_tracked``)."""
    return {
        k: np.ascontiguousarray(t.to_torch(np.asarray(t.variable[...])))
        for k, t in torch_to_nnx_map(module, renames=renames).items()
    }


def _matches(key: str, patterns: frozenset[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


#: How many keys a :class:`KeyMapError` lists per kind of problem (the count says how many there are).
LISTED = 5


def _listed(items: list[str], sep: str) -> str:
    more = f"{sep}... and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return sep.join(items[:LISTED]) + more


def load_torch_state(
    module: nnx.Module,
    state: Mapping[str, np.ndarray],
    *,
    renames: Mapping[str, str] | None = None,
    ignore: frozenset[str] = frozenset(),
    what: str = "checkpoint",
) -> LoadReport:
    """Copy a torch-named state into ``module`` in place; exhaustive and all-or-nothing (module docstring).

    A state that does not fit is a :class:`KeyMapError` of one line: each kind of problem with its count
    and the first :data:`LISTED` keys."""
    targets = torch_to_nnx_map(module, renames=renames)
    missing = [k for k in targets if k not in state]
    reshaped, not_float = [], []
    converted: dict[str, np.ndarray] = {}
    for key, target in targets.items():
        if key not in state:
            continue
        array = np.asarray(state[key])
        if tuple(array.shape) != target.torch_shape:
            nnx_name = ".".join(map(str, target.path))
            reshaped.append(
                f"{key}: {what} has {tuple(array.shape)}, model expects {target.torch_shape} "
                f"(torch layout; NNX {nnx_name} {tuple(target.variable.shape)})"
            )
            continue
        if not np.issubdtype(array.dtype, np.floating):
            not_float.append(f"{key}: expected a floating-point array, got dtype {array.dtype}")
            continue
        converted[key] = target.from_torch(array)
    unused = [k for k in state if k not in targets]
    ignored = sorted(k for k in unused if _matches(k, ignore))
    unexpected = sorted(set(unused) - set(ignored))
    problems = [
        f"{kind} ({len(items)}): {_listed(items, sep)}"
        for kind, items, sep in (
            ("missing keys", missing, ", "),
            ("shape mismatches", reshaped, "; "),
            ("not floating-point", not_float, "; "),
            ("unexpected keys", unexpected, ", "),
        )
        if items
    ]
    if problems:
        raise KeyMapError(f"{what} does not fit {type(module).__name__}: " + "; ".join(problems))
    for key, target in targets.items():
        target.variable.set_value(jnp.asarray(converted[key], dtype=target.variable.dtype))
    return LoadReport(loaded=tuple(targets), ignored=tuple(ignored))


def load_uniformer_weights(
    model: UniFormer, state: Mapping[str, np.ndarray], *, ignore: frozenset[str] = UNIFORMER_IGNORE
) -> LoadReport:
    """Load a torch UniFormer ``state_dict`` (K400 checkpoint, CoReEcho backbone, fixtures) into ``model``.

    Keys must be bare torch names (``read_state_dicts`` strips DataParallel's ``module.``).
    By default ``*num_batches_tracked`` and, when the model has no classifier, ``head.*`` are ignored."""
    return load_torch_state(model, state, ignore=ignore, what="UniFormer state")


def load_head_weights(
    head: RegressionHead, state: Mapping[str, np.ndarray], *, ignore: frozenset[str] = HEAD_IGNORE
) -> LoadReport:
    """Load CoReEcho's regressor state (``nn.Sequential`` keys ``0.*``, ``2.*``, ``3.*``, ``6.*``)."""
    return load_torch_state(head, state, renames=HEAD_RENAMES, ignore=ignore, what="head state")


def load_coreecho_weights(
    model: CoReEcho, encoder_state: Mapping[str, np.ndarray], head_state: Mapping[str, np.ndarray]
) -> tuple[LoadReport, LoadReport]:
    """Load a CoReEcho checkpoint's backbone (``model``) and ``regressor`` state_dicts, with bare torch
    names as :func:`~coreecho_jax.checkpoints.torch_pth.read_state_dicts` returns them, into a
    :class:`CoReEcho`; the backbone's dead ``head.*`` Linear is ignored."""
    return load_uniformer_weights(model.encoder, encoder_state), load_head_weights(model.head, head_state)


def _require(state: Mapping[str, np.ndarray], key: str, ndim: int) -> np.ndarray:
    if key not in state:
        raise KeyMapError(f"cannot infer the UniFormer config: key {key} is missing")
    a = np.asarray(state[key])
    if a.ndim != ndim:
        raise KeyMapError(
            f"cannot infer the UniFormer config: {key} has shape {a.shape}, expected {ndim} dims"
        )
    return a


def preset_head_dim(depth: tuple[int, ...], dims: tuple[int, ...], mlp_ratio: float) -> int:
    """The head_dim of the preset with this depth, dims and mlp_ratio; 64 (UniFormer-S/B) when none has."""
    for preset in PRESETS.values():
        cfg = UniFormerConfig(**preset)
        if (tuple(cfg.depth), tuple(cfg.dims), cfg.mlp_ratio) == (depth, dims, mlp_ratio):
            return int(cfg.head_dim)
    return int(UniFormerConfig.head_dim)


def infer_uniformer_config(
    state: Mapping[str, np.ndarray], *, head_dim: int | None = None, **overrides: Any
) -> UniFormerConfig:
    """Derive a :class:`UniFormerConfig` from a torch UniFormer state dict's keys and shapes.

    depth counts ``blocks{i}.{j}`` indices, dims and in_chans come from ``patch_embed{i}.proj.weight``,
    mlp_ratio from ``blocks1.0.mlp.fc1.weight``, num_classes from ``head.weight`` (None without a head).
    ``head_dim`` cannot be seen in the weights: None takes the head_dim of the preset whose depth, dims
    and mlp_ratio the weights have (:func:`preset_head_dim`: 64 for UniFormer-S/B, 16 for ``tiny``), else
    64. A wrong head_dim that divides the widths still loads, and silently computes other numbers.
    ``overrides`` set the non-architectural fields (dropout, dtype, depthwise, ...)."""
    dims = []
    for i in range(1, 5):
        w = _require(state, f"patch_embed{i}.proj.weight", 5)
        expected_k = (3, 4, 4) if i == 1 else (1, 2, 2)
        if tuple(w.shape[2:]) != expected_k:
            raise KeyMapError(
                f"patch_embed{i}.proj.weight has kernel {tuple(w.shape[2:])}, expected {expected_k} "
                "(only std=False UniFormer video models are supported)"
            )
        if i > 1 and w.shape[1] != dims[-1]:
            raise KeyMapError(
                f"patch_embed{i}.proj.weight has {w.shape[1]} input channels, expected {dims[-1]}"
            )
        dims.append(int(w.shape[0]))
    in_chans = int(np.asarray(state["patch_embed1.proj.weight"]).shape[1])
    depth = []
    for i in range(1, 5):
        pat = re.compile(rf"^blocks{i}\.(\d+)\.")
        idx = sorted({int(m.group(1)) for k in state if (m := pat.match(k))})
        if not idx or idx != list(range(len(idx))):
            raise KeyMapError(f"blocks{i}: expected block indices 0..n-1, found {idx}")
        depth.append(len(idx))
    for i in (1, 2):
        _require(state, f"blocks{i}.0.attn.weight", 5)
    for i in (3, 4):
        _require(state, f"blocks{i}.0.attn.qkv.weight", 2)
    fc1 = _require(state, "blocks1.0.mlp.fc1.weight", 5)
    mlp_ratio = fc1.shape[0] / dims[0]
    num_classes = None
    if "head.weight" in state:
        num_classes = int(_require(state, "head.weight", 2).shape[0])
    fields: dict[str, Any] = dict(
        depth=tuple(depth),
        dims=tuple(dims),
        head_dim=preset_head_dim(tuple(depth), tuple(dims), mlp_ratio) if head_dim is None else head_dim,
        mlp_ratio=mlp_ratio,
        in_chans=in_chans,
        num_classes=num_classes,
    )
    fields.update(overrides)
    return UniFormerConfig(**fields)
