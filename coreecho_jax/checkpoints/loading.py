"""Weights into models from every kind of checkpoint this project reads.

* ``initialize_from(model, path)``: weights into an existing model from a PyTorch ``.pth`` (Kinetics-400
  UniFormer or CoReEcho ``best.pth``, through the safe reader and the exhaustive key map), a folder
  written by ``coreecho import-weights``, or a run workdir (its best epoch).
  A checkpoint of another UniFormer architecture than ``model`` is an
  :class:`~coreecho_jax.checkpoints.architecture.ArchitectureMismatchError` naming both and the
  ``model.preset`` that selects the checkpoint's; a damaged one is skipped or named (see ``manager``).
* ``load_for_inference(config, path)``: the model a ``--checkpoint`` names, built with the architecture
  the checkpoint itself records where it records one: the checkpoint part of
  :func:`coreecho_jax.inference.runs.load_run`, which also gives the config that trained the model
  (call that).
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
from flax import nnx

from coreecho_jax.checkpoints import architecture, key_map, torch_import, torch_pth
from coreecho_jax.checkpoints.manager import RunCheckpoints, load_model_state_dict, model_state_dict
from coreecho_jax.errors import CheckpointError
from coreecho_jax.models.coreecho import CoReEcho, build_model


def _is_run_dir(path: Path) -> bool:
    return (path / "checkpoints").is_dir()


def _load_run_best(model: nnx.Module, path: Path) -> str:
    """The best epoch of a run workdir's last stage that has one (stage 2, else stage 1) into ``model``.

    A stage whose ``best/`` holds no finished step (e.g. killed during its first save) is passed over;
    damaged steps are skipped with a warning, and a stage whose steps are all damaged is an error."""
    template = {"model": model_state_dict(model)}
    for stage in ("stage2", "stage1"):
        stage_dir = path / "checkpoints" / stage
        ckpts = RunCheckpoints(stage_dir, read_only=True)
        try:
            restored = ckpts.restore_best(template)
        finally:
            ckpts.close()
        if restored is not None:
            load_model_state_dict(model, restored[0]["model"])
            return f"{stage_dir}/best (epoch {restored[1]['epoch']})"
    raise CheckpointError(
        f"{path}: a run workdir without any best checkpoint under checkpoints/stage{{1,2}}/best"
    )


def initialize_from(model: CoReEcho, path: str | Path | None) -> str:
    """Loads weights named by ``path`` into ``model`` in place; returns what was loaded (for logs)."""
    if not path:
        return "random initialisation"
    path = Path(path)
    if not path.exists():
        raise torch_pth.CheckpointNotFoundError(
            f"{path}: checkpoint not found (expected a .pth file, an imported Orbax folder or a run workdir)"
        )
    if path.is_file():
        ckpt = torch_pth.read_state_dicts(path)
        architecture.check_pth_fits(path, ckpt.encoder, ckpt.head, model.encoder)
        try:
            if ckpt.head is not None:
                key_map.load_coreecho_weights(model, ckpt.encoder, ckpt.head)
                return f"{path} (encoder and regression head, {ckpt.meta.get('format')})"
            key_map.load_uniformer_weights(model.encoder, ckpt.encoder)
        except key_map.KeyMapError as e:
            raise type(e)(f"{path}: {e}") from None
        return f"{path} (encoder; the head keeps its initialisation)"
    if (path / torch_import.CONFIG_FILE).is_file():
        imported = torch_import.restore_imported(path)
        if isinstance(imported, CoReEcho):
            load_model_state_dict(model, model_state_dict(imported))
            return f"{path} (imported CoReEcho)"
        state = model_state_dict(imported)
        state.pop("head", None)  # an encoder imported --with-classifier: its Kinetics classifier is not used
        load_model_state_dict(model.encoder, state)
        return f"{path} (imported encoder)"
    if _is_run_dir(path):
        return _load_run_best(model, path)
    raise CheckpointError(
        f"{path}: not a .pth file, an imported folder (with {torch_import.CONFIG_FILE}) "
        f"or a run workdir (with checkpoints/)"
    )


def load_for_inference(config: ml_collections.ConfigDict, path: str | Path) -> tuple[CoReEcho, str]:
    """The model a checkpoint describes, in eval mode, and a description of its origin.

    ``.pth`` and imported folders carry their own architecture; a run workdir is rebuilt from
    ``config.model``, which must be the run's: ``config`` is the inference config
    (:func:`saved_config.inference_config`, as :func:`coreecho_jax.inference.runs.load_run` makes it).
    """
    path = Path(path)
    if path.is_file():
        model, info = torch_import.import_pth(path)
        if not isinstance(model, CoReEcho):
            raise CheckpointError(
                f"{path}: holds an encoder without a regression head (e.g. Kinetics-400 "
                f"weights); it cannot predict EF. Train from it with --config.model.init_from"
            )
        return model, f"{path} ({info.meta.get('format')})"
    if (path / torch_import.CONFIG_FILE).is_file():
        model = torch_import.restore_imported(path)
        if not isinstance(model, CoReEcho):
            raise CheckpointError(f"{path}: an imported encoder without a regression head cannot predict EF")
        return model, str(path)
    model = build_model(config.model, seed=int(config.seed))
    origin = initialize_from(model, path)
    model.eval()
    return model, origin
