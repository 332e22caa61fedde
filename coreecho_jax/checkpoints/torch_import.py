"""Import PyTorch UniFormer / CoReEcho ``.pth`` checkpoints into Flax NNX models, and save them with Orbax.

Reads the file with the torch-free, code-execution-free reader (:mod:`.torch_pth`), infers the UniFormer
architecture from the tensor shapes (:func:`.key_map.infer_uniformer_config`) and copies every weight
through the exhaustive key map (:mod:`.key_map`):

* a file with a CoReEcho ``regressor`` -> :class:`CoReEcho` (encoder + regression head; the backbone's dead
  ``head.*`` Linear is ignored);
* any other UniFormer state_dict (e.g. HF ``Sense-X/uniformer_video`` ``uniformer_small_k400_16x8.pth``)
  -> :class:`UniFormer` without classifier (``head.*`` ignored), or with it when ``with_classifier=True``.

Command line (:mod:`coreecho_jax.commands.tools`)::

    coreecho import-weights --pth=FILE --out=DIR [--head_dim=N] [--with_classifier] [--allow_namespace] [--force]

writes ``DIR/model`` (Orbax ``StandardCheckpointer``: the model's parameters and BatchNorm statistics as
``nnx.to_pure_dict``; dropout RNG state is not saved, it is not part of a torch file) and
``DIR/model_config.json`` (architecture, source, checkpoint meta, key report). :func:`restore_imported`
rebuilds the model from the JSON and restores the weights; damaged weights are one
:class:`~coreecho_jax.errors.CheckpointError` line naming the folder and the first unreadable array.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from coreecho_jax.checkpoints.key_map import (
    KeyMapError,
    infer_uniformer_config,
    load_coreecho_weights,
    load_uniformer_weights,
)
from coreecho_jax.checkpoints.manager import (
    damage_reason,
    load_model_state_dict,
    model_state_dict,
    quiet_abandoned_reads,
)
from coreecho_jax.checkpoints.torch_pth import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    read_state_dicts,
)
from coreecho_jax.errors import CheckpointError
from coreecho_jax.models.coreecho import CoReEcho
from coreecho_jax.models.rngs import make_rngs
from coreecho_jax.models.uniformer import UniFormer, UniFormerConfig, count_params

__all__ = ["ImportInfo", "import_pth", "restore_imported", "save_imported"]

CONFIG_FILE = "model_config.json"
STATE_DIR = "model"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ImportInfo:
    """What :func:`import_pth` built and loaded.

    Attributes:
      source: the ``.pth`` path.
      model_type: 'coreecho' (encoder + regression head) or 'uniformer' (encoder only).
      config: the inferred :class:`UniFormerConfig` (``num_classes`` set only with the classifier).
      has_head: whether a CoReEcho regression head was loaded.
      loaded: torch keys copied into the model (head keys prefixed ``regressor.``).
      ignored: torch keys deliberately left out (``num_batches_tracked``, unused ``head.*``).
      num_params: scalar parameters in the model.
      meta: checkpoint meta from :func:`read_state_dicts` (format, epoch, best_error, other_keys).
    """

    source: str
    model_type: str
    config: UniFormerConfig
    has_head: bool
    loaded: tuple[str, ...]
    ignored: tuple[str, ...]
    num_params: int
    meta: dict[str, Any]


def _abstract_model(model_type: str, config: UniFormerConfig, *, seed: int = 0) -> nnx.Module:
    """The model with ShapeDtypeStruct leaves: no random init (which costs XLA compiles per shape)."""
    if model_type == "coreecho":
        # The head's dropout rate and bias init are no part of the weights (the model that loads them
        # is built from its config): any value builds the same tree.
        build = lambda: CoReEcho(config, head_dropout=0.0, head_bias_init=None, rngs=make_rngs(seed))
    elif model_type == "uniformer":
        build = lambda: UniFormer(config, rngs=make_rngs(seed))
    else:
        raise CheckpointFormatError(f"model_type must be 'coreecho' or 'uniformer', got {model_type!r}")
    return nnx.eval_shape(build)


def _finish_model(model: nnx.Module, *, seed: int = 0) -> nnx.Module:
    """Give an abstract model whose weights were loaded concrete dropout RNG streams (split from the
    ``make_rngs(seed)`` dropout stream, counts 0), check that no abstract leaf is left, switch to eval."""
    rng_keys = [v for _, v in nnx.iter_graph(model) if isinstance(v, nnx.RngKey)]
    keys = jax.random.split(make_rngs(seed).dropout(), max(len(rng_keys), 1))
    for i, var in enumerate(rng_keys):
        if var.get_value().dtype != keys.dtype:
            raise RuntimeError(f"dropout key dtype {var.get_value().dtype} differs from {keys.dtype}")
        var.set_value(keys[i])
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.RngCount):
            var.set_value(jnp.zeros((), jnp.uint32))
    abstract = [
        ".".join(map(str, path))
        for path, leaf in nnx.to_flat_state(nnx.state(model))
        if isinstance(leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf, jax.ShapeDtypeStruct)
    ]
    if abstract:
        raise RuntimeError(f"variables left unset after loading: {abstract[:10]}")
    model.eval()
    return model


def import_pth(
    path: str | Path,
    *,
    head_dim: int | None = None,
    with_classifier: bool = False,
    allow_namespace: bool = False,
    **config_overrides: Any,
) -> tuple[nnx.Module, ImportInfo]:
    """Build a model from a PyTorch checkpoint and load all its weights (returned in eval mode).

    Args:
      path: a ``.pth`` file (zip or legacy; flat, ``model``/``model_state``-nested or CoReEcho layout).
      head_dim: channels per attention head; not visible in the weights. None: the head_dim of the
        preset the weights' shapes match (64 for UniFormer-S/B, 16 for ``tiny``), else 64.
      with_classifier: for files without a regressor, also build and load the Kinetics classifier
        (``head.*``, 400 classes for K400); by default it is ignored.
      allow_namespace: read a pickled ``argparse.Namespace`` (CoReEcho ``last.pth`` ``opt``) as a dict.
      **config_overrides: non-architectural :class:`UniFormerConfig` fields (dtype, depthwise, remat,
        dropout, drop_path).

    Returns:
      ``(model, info)``: a :class:`CoReEcho` when the file has a regressor, else a :class:`UniFormer`.

    Raises:
      FileNotFoundError, UnsafeCheckpointError, CheckpointFormatError: from the reader.
      KeyMapError: the weights do not fit the inferred model (message lists missing/unexpected keys).
    """
    ckpt = read_state_dicts(path, allow_namespace=allow_namespace)
    try:
        if ckpt.head is not None:
            if with_classifier:
                raise CheckpointError("a CoReEcho checkpoint has no Kinetics classifier to load")
            model_type = "coreecho"
            config = infer_uniformer_config(
                ckpt.encoder, head_dim=head_dim, **config_overrides, num_classes=None
            )
        else:
            model_type = "uniformer"
            config = infer_uniformer_config(ckpt.encoder, head_dim=head_dim, **config_overrides)
            if with_classifier and config.num_classes is None:
                raise KeyMapError("with_classifier=True but the state_dict has no head.weight")
            if not with_classifier:
                config = dataclasses.replace(config, num_classes=None)
        model = _abstract_model(model_type, config)
        if model_type == "coreecho":
            enc, head = load_coreecho_weights(model, ckpt.encoder, ckpt.head)
            loaded = enc.loaded + tuple(f"regressor.{k}" for k in head.loaded)
            ignored = enc.ignored + tuple(f"regressor.{k}" for k in head.ignored)
        else:
            enc = load_uniformer_weights(model, ckpt.encoder)
            loaded, ignored = enc.loaded, enc.ignored
    except CheckpointError as e:  # one line that names the file
        raise type(e)(f"{path}: {e}") from None
    _finish_model(model)
    info = ImportInfo(
        source=str(path),
        model_type=model_type,
        config=config,
        has_head=model_type == "coreecho",
        loaded=loaded,
        ignored=ignored,
        num_params=count_params(model),
        meta=ckpt.meta,
    )
    return model, info


def _config_json(info: ImportInfo) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "model_type": info.model_type,
        "uniformer_config": dataclasses.asdict(info.config),
        "has_head": info.has_head,
        "source": info.source,
        "meta": info.meta,
        "num_params": info.num_params,
        "loaded_keys": list(info.loaded),
        "ignored_keys": list(info.ignored),
    }


def save_imported(model: nnx.Module, info: ImportInfo, out_dir: str | Path, *, force: bool = False) -> Path:
    """Write ``out_dir/model`` (Orbax) and ``out_dir/model_config.json``; returns ``out_dir``.

    Refuses to overwrite an existing ``out_dir/model`` unless ``force``."""
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    if (out / STATE_DIR).exists() and not force:
        raise CheckpointError(f"{out / STATE_DIR} exists; pass force=True (--force) to overwrite it")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out / STATE_DIR, model_state_dict(model), force=force)
        checkpointer.wait_until_finished()
    (out / CONFIG_FILE).write_text(json.dumps(_config_json(info), indent=2) + "\n")
    return out


def restore_imported(directory: str | Path) -> nnx.Module:
    """Rebuild the model described by ``directory/model_config.json`` and restore its Orbax weights
    (eval mode)."""
    directory = Path(directory).absolute()
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointNotFoundError(f"{cfg_path}: missing; expected a directory written by torch_import")
    spec = json.loads(cfg_path.read_text())
    if spec.get("format_version") != FORMAT_VERSION:
        raise CheckpointFormatError(f"{cfg_path}: unsupported format_version {spec.get('format_version')!r}")
    config = UniFormerConfig(**spec["uniformer_config"])
    model = _abstract_model(spec["model_type"], config)
    quiet_abandoned_reads()
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(directory / STATE_DIR, model_state_dict(model))
    except Exception as e:  # damage_reason decides; anything else is raised as it is
        reason = damage_reason(e, directory)
        if reason is None:
            raise
        raise CheckpointError(
            f"{directory / STATE_DIR}: unreadable (damaged) weights ({reason}); import the .pth again"
        ) from None
    load_model_state_dict(model, restored)
    return _finish_model(model)


def summary(info: ImportInfo, out: Path) -> str:
    """What an import read and wrote, one line per fact (``coreecho import-weights`` prints it)."""
    cfg = info.config
    meta = info.meta
    lines = [
        f"source:      {info.source} (layout '{meta['format']}'"
        + (f", epoch {meta['epoch']}" if meta.get("epoch") is not None else "")
        + (f", best_error {meta['best_error']:.4g}" if meta.get("best_error") is not None else "")
        + ")",
        f"model:       {'CoReEcho (UniFormer + regression head)' if info.has_head else 'UniFormer encoder'}; "
        f"depth {list(cfg.depth)}, dims {list(cfg.dims)}, head_dim {cfg.head_dim}, "
        f"mlp_ratio {cfg.mlp_ratio:g}, classes {cfg.num_classes}",
        f"keys mapped: {len(info.loaded)}",
        f"ignored:     {len(info.ignored)}" + (f" ({', '.join(info.ignored)})" if info.ignored else ""),
        f"parameters:  {info.num_params:,}",
        f"written:     {out / STATE_DIR} and {out / CONFIG_FILE}",
    ]
    if meta.get("other_keys"):
        lines.insert(1, f"not read:    top-level entries {meta['other_keys']}")
    return "\n".join(lines)
