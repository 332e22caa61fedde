"""Probing or fine-tuning on your own cohort: a manifest CSV of videos and labels, cross-validated.

    coreecho train --config=custom --workdir=runs/cohort_ef \
        --config.data.manifest=/data/cohort/manifest.csv \
        --config.transfer.init=runs/echonet                # a coreecho-jax run, best.pth or K400 .pth
    coreecho train --config=custom:classification --workdir=runs/cohort_cls \
        --config.data.manifest=/data/cohort/labels.csv --config.transfer.mode=finetune \
        --config.transfer.init=runs/echonet

The variant chooses the task: ``regression`` (the default; labels are EF in percent, reported as r,
MAE and RMSE overall and per EF category, with calibrated EF intervals) or ``classification`` (labels
1 / 0, reported as the HMC-QU table: sensitivity ... AUROC); ``--config.task=custom_classification``
does the same. The manifest's columns (path, label; optional fold or split, group, start_frame and
end_frame) and its checks are in coreecho_jax/data/transfer/manifest.py; the loop, the reports and the
hyperparameters are the CAMUS / HMC-QU ones (configs/transfer.py). Videos are read as the predictor
reads them (AVI/MP4/DICOM, cropped to the image region: ``data.crop``), then each video or cycle becomes
one clip of ``data.frames`` frames (coreecho_jax/data/transfer/cycles.py, ``area`` pipeline).
"""

from __future__ import annotations

import ml_collections

from coreecho_jax.configs import check_variant, transfer
from coreecho_jax.data import clips
from coreecho_jax.data import echonet_layout as layout

VARIANTS = ("regression", "classification")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The configuration of a manifest cohort; ``arg``: ``regression`` (default) or ``classification``."""
    kind = check_variant(arg, VARIANTS, "custom") or "regression"
    c = transfer.transfer_config(
        f"custom_{kind}",  # the record (coreecho_jax/transfer/tasks.py) of the task's kind
        view="",  # not read: the manifest lists the videos
        # auto: the manifest's fold column (0-based), or its split column (train / val / test: one fold),
        # else seeded stratified folds (by class, or by EF category < 40, 40-49, >= 50); stratified: those
        # even when the manifest has a fold or split column
        folds="auto",
        n_folds=5,  # stratified folds only
        # choice: CoReEcho's clip length (36 frames, official --frames 36). A whole loop of 2-3 s then has
        # about the temporal scale of its EchoNet training clips (36 frames at stride 4 of ~50 fps)
        frames=layout.CLIP_FRAMES,
        image_size=layout.FRAME_SIZE,  # px, the EchoNet frame size CoReEcho was trained on
        crop_fraction=1.0,  # the image region is found by data.crop; nothing more cut
        mean=tuple(float(x) for x in clips.MEAN),  # EchoNet's: the statistics the encoder was trained on
        std=tuple(float(x) for x in clips.STD),
        n_videos=60,  # synthetic videos (configs/custom_demo.py)
    )
    c.data.manifest = ""  # the manifest CSV (or a folder holding manifest.csv); its paths are relative to it
    c.data.fold_seed = 0  # stratified folds only
    c.data.crop = "auto"  # load_echo_video: DICOM ultrasound region, else the moving sector; none: as stored
    c.data.spatial = "area"  # grey, crop, area resize; uint8 clips (cycles.py)
    c.data.time_sampling = "ends"  # the first and last frame of the video or cycle kept
    c.eval.interval_level = 0.9  # regression: coverage of the calibrated EF intervals (90 %)
    return c
