"""What ``main.py`` calls: one function per mode, each a thin wrapper over the library."""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections


def hide_gpus_from_tensorflow() -> None:
    """TensorFlow only feeds the input pipeline; it must not reserve GPU memory that JAX needs."""
    try:
        import tensorflow as tf
    except ImportError:  # the GPU machine may have no TensorFlow: nothing to hide
        return
    tf.config.set_visible_devices([], "GPU")


def run(
    mode: str,
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    checkpoint: str | None = None,
    video: str | None = None,
) -> dict:
    """Dispatches ``--mode``: train | evaluate | predict | data."""
    workdir_path = Path(workdir)
    if mode == "train":
        from coreecho_jax.train import loop

        return loop.train_and_evaluate(config, workdir_path)
    if mode == "evaluate":
        from coreecho_jax.train import loop

        return loop.evaluate_checkpoint(config, workdir_path, checkpoint)
    if mode == "predict":
        if not video:
            raise ValueError("--mode=predict needs --video=PATH (an AVI, MP4 or DICOM file)")
        from coreecho_jax import predict

        result = predict.predict_file(config, video, checkpoint or workdir_path)
        print(json.dumps(result, indent=2))
        return result
    if mode == "data":
        from coreecho_jax.data import datasets

        return datasets.describe(config, workdir_path)
    raise ValueError(f"unknown mode {mode!r}; expected train, evaluate, predict or data")
