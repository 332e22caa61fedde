"""Any trained model a ``--checkpoint`` names, with the config that trained it: the one loader.

``load_run(config, source)`` takes

* a CoReEcho run workdir (``config.json`` + ``checkpoints/stage{1,2}``): the best epoch of its last
  stage, rebuilt with the model section of its ``config.json``; the clip settings are the run's
  (:func:`~coreecho_jax.checkpoints.saved_config.inference_config`: a given config that disagrees on
  one is refused, its runtime model fields ``dtype`` / ``remat`` / ``depthwise`` / ``attention`` and
  every other field, e.g. ``eval.*``, are kept);
* a CoReEcho ``.pth`` or a folder written by ``checkpoints.torch_import``: their own architecture, the
  clip settings of the given ``config`` (they record none, so it is required);
* a weights folder (:mod:`.weights_folder`: ``model.safetensors``, ``config.json``, ``manifest.json``):
  every file checked against the manifest, then the model and clip settings of its ``config.json``,
  as for a run workdir (:func:`load_weights_folder`);
* whatever a registered loader (:func:`register_loader`) recognises first: the transfer folds of
  :mod:`coreecho_jax.analysis.runs` (CAMUS, HMC-QU), whose model needs the transfer package. This module
  imports no training, transfer or TensorFlow code (``tests/test_imports.py``), so that predicting a
  video stays light.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import ml_collections

from coreecho_jax.checkpoints import loading, saved_config
from coreecho_jax.errors import CheckpointError, ConfigError
from coreecho_jax.inference import weights_folder
from coreecho_jax.models.coreecho import CoReEcho


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A loaded model (eval mode) and where it came from.

    Attributes:
        model: the CoReEcho encoder with its head (EchoNet/CAMUS: EF in %; HMC-QU: the MI logit).
        config: the config that trained it (a copy; runtime model fields may be the given config's).
        origin: what was loaded, in a line (for logs and reports; ``coreecho embed`` records it).
        source: the path that was loaded (run workdir, ``.pth``, imported folder, transfer fold folder).
        task: ``"echonet"``, ``"camus"``, ``"hmcqu"``, or a manifest cohort's ``"custom_regression"`` /
            ``"custom_classification"``.
        workdir: the run workdir (EchoNet run) or the transfer workdir; None for ``.pth`` / imported.
        fold: the transfer fold (0-based), else None.
        has_head: whether the head was trained (False: an encoder-only weights folder, whose head is
            zeros and must not predict).
    """

    model: CoReEcho
    config: ml_collections.ConfigDict
    origin: str
    source: Path
    task: str = "echonet"
    workdir: Path | None = None
    fold: int | None = None
    has_head: bool = True

    @property
    def output(self) -> str:
        """What the head outputs: ``"EF"`` (in %) or ``"MI logit"``."""
        if self.task == "hmcqu":
            return "MI logit"
        return "logit" if self.task.endswith("classification") else "EF"  # a cohort's: custom_<kind>


RunLoader = Callable[[ml_collections.ConfigDict | None, Path], "TrainedModel | None"]
"""``(given config or None, source) -> the model source names``, or None when it is not its kind."""

_LOADERS: list[RunLoader] = []


def register_loader(loader: RunLoader) -> None:
    """Lets :func:`load_run` ask ``loader`` first (once, however often it is registered); a package above
    this one (the transfer folds of :mod:`coreecho_jax.analysis.runs`) registers when it is imported."""
    if loader not in _LOADERS:
        _LOADERS.append(loader)


def load_run(config: ml_collections.ConfigDict | None, source: str | Path) -> TrainedModel:
    """The trained model ``source`` names, in eval mode, and the config that trained it (module doc).

    Args:
        config: the given config; required for a ``.pth`` / imported folder (their clip settings),
            otherwise optional (runtime model fields, ``eval.*``; an EchoNet run's clip settings are
            checked against the run's).
        source: run workdir, ``.pth`` file, imported folder, or what a registered loader knows.

    Raises:
        ConfigError: no config for a ``.pth`` / imported folder, or one whose clip settings disagree
            with the run's. CheckpointError: a transfer workdir with no loader for it, a missing or
            damaged checkpoint, an encoder without a regression head.
    """
    path = Path(source)
    if weights_folder.is_weights_folder(path):  # first: its files are checked before anything reads them
        return load_weights_folder(config, path)
    for loader in _LOADERS:
        trained = loader(config, path)
        if trained is not None:
            return trained
    saved = saved_config.read_run_config(path)
    task = None if saved is None else str(saved.get("task", "echonet"))
    if task not in (None, "echonet"):
        raise CheckpointError(
            f"{path}: a {task} transfer workdir, not a CoReEcho run; its folds are read by Grad-CAM "
            f"(coreecho gradcam --checkpoint={path}/folds/fold<k>)"
        )
    if config is None:
        if saved is None:
            raise ConfigError(
                f"{path}: not a run workdir (no config.json); give the config of its clips "
                f"(--config=configs/FILE.py)"
            )
        config = ml_collections.ConfigDict(saved)
    config = saved_config.inference_config(config, path)
    model, origin = loading.load_for_inference(config, path)
    model.eval()
    return TrainedModel(model, config, origin, path, "echonet", path if saved is not None else None)


#: Why an encoder-only weights folder (e.g. the Kinetics-400 UniFormer's) cannot predict.
NO_HEAD = (
    "holds an encoder without a trained EF regression head (e.g. the Kinetics-400 UniFormer): it cannot "
    "predict EF; use it for embeddings (EchoModel.embed) or as a starting point for training"
)


def load_weights_folder(
    config: ml_collections.ConfigDict | None, source: str | Path, *, require_head: bool = True
) -> TrainedModel:
    """The model of a weights folder (files checked against its manifest first), with its config:
    ``config`` (optional) with the folder's clip settings and model
    (:func:`~coreecho_jax.checkpoints.saved_config.inference_config`), else the folder's own.

    Raises:
        WeightsError: a missing, changed or foreign file (:func:`weights_folder.read_folder`), or, with
            ``require_head``, an encoder-only folder (:data:`NO_HEAD`).
        ConfigError: the given config's clip settings disagree with the folder's.
    """
    path = Path(source)
    folder = weights_folder.read_folder(path)
    if require_head and not folder.has_head:
        raise weights_folder.WeightsError(f"{path}: {NO_HEAD}")
    config = saved_config.inference_config(
        ml_collections.ConfigDict(folder.config) if config is None else config, path
    )
    model = weights_folder.load_model(folder, config.model)
    origin = f"{path} (weights {folder.weights_sha256[:12]})"
    return TrainedModel(model, config, origin, path, "echonet", has_head=folder.has_head)
