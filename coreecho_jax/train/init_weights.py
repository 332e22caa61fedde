"""The weights a run starts from: every checkpoint :mod:`coreecho_jax.checkpoints.loading` reads, and a
weights folder (``coreecho export-weights``, :mod:`coreecho_jax.inference.weights_folder`).

A weights folder is read here, not in ``checkpoints``, because its format lives on the inference path,
above the checkpoints package. Its files are checked against the manifest first; a folder with an EF
head sets the encoder and the head, an encoder-only folder (the Kinetics-400 export) the encoder
(the head keeps its initialisation, as with a Kinetics-400 ``.pth``).
"""

from __future__ import annotations

from pathlib import Path

from coreecho_jax.checkpoints import architecture, loading
from coreecho_jax.checkpoints.manager import load_model_state_dict, model_state_dict
from coreecho_jax.inference import weights_folder
from coreecho_jax.models.coreecho import CoReEcho


def initialize_from(model: CoReEcho, path: str | Path | None) -> str:
    """Loads the weights ``path`` names into ``model`` in place; returns what was loaded (for logs).

    ``path``: a weights folder, or what :func:`coreecho_jax.checkpoints.loading.initialize_from` reads
    (a ``.pth``, an imported folder, a run workdir); empty: the random initialisation is kept.

    Raises:
        WeightsError: a weights folder whose files fail their manifest or do not fit its config.
        ArchitectureMismatchError: a weights folder of another UniFormer architecture than ``model``.
    """
    if not path or not weights_folder.is_weights_folder(path):
        return loading.initialize_from(model, path)
    folder = weights_folder.read_folder(path)
    found = weights_folder.load_model(folder, folder.config["model"])
    if not architecture.same_architecture(found.encoder.config, model.encoder.config):
        raise architecture.ArchitectureMismatchError(
            architecture.mismatch_message(
                f"{path} holds a weights folder of architecture", found.encoder.config, model.encoder.config
            )
        )
    if folder.has_head:
        load_model_state_dict(model, model_state_dict(found))
        return f"{path} (weights folder {folder.weights_sha256[:12]}: encoder and regression head)"
    load_model_state_dict(model.encoder, model_state_dict(found.encoder))
    return f"{path} (weights folder {folder.weights_sha256[:12]}: encoder; the head keeps its initialisation)"
