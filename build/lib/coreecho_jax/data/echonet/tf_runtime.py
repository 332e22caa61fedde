"""TensorFlow's runtime settings for the input pipeline, set in one place when TF work starts.

TensorFlow only feeds the input pipeline (CPU). Left alone it reserves the GPUs' memory that JAX
needs, so :func:`hide_gpus_from_tensorflow` hides them from it. Importing this module (or any module
of ``coreecho_jax.data``) changes nothing; the preparation and the pipeline constructors call the
function before their first TF operation.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_hidden = False


def hide_gpus_from_tensorflow() -> None:
    """Makes TensorFlow see no GPU (idempotent: only the first call acts).

    Must run before TensorFlow initialises its devices (its first op); later, TF refuses and the
    GPUs it already holds stay visible, which is logged. Without TensorFlow installed it does nothing.
    """
    global _hidden
    if _hidden:
        return
    _hidden = True
    try:
        import tensorflow as tf
    except ImportError:
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except ValueError:  # this TensorFlow has no GPU support: nothing to hide
        return
    except RuntimeError as err:  # TF already initialised its devices
        if tf.config.get_visible_devices("GPU"):
            log.warning("TensorFlow already uses the GPU(s) and cannot release them to JAX: %s", err)
