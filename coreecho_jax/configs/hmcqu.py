"""CoReEcho transfer to HMC-QU (Table 5): myocardial-infarction classification, A4C, stratified 5-fold CV.

    coreecho train --config=hmcqu --workdir=runs/hmcqu_ft \
        --config.data.root=/data/HMC-QU --config.transfer.mode=finetune \
        --config.transfer.init=runs/echonet

The paper's subset (the 109 A4C videos with masks, 72 MI / 37 normal) and its five stratified folds
(shipped with the package) are the defaults. A video is MI when any segment is MI. The clips are
prepared exactly as the paper's reference [21] (``mi/a4c/cycle.py``; the paper says it strictly
follows it): the sheet's cycle without its end frame (a recording named ES00071 at every other frame),
PIL grey and bicubic resize to 224, centre crop 170, bilinear back to 224, 12 frames sampled as
``interpolate(..., mode="trilinear")`` does (coreecho_jax/data/transfer/cycles.py). The previous protocol
(16 frames of 112 px, both cycle ends, crop + area resize, both ends kept in time) is
``--config.data.frames=16 --config.data.image_size=112 --config.data.cycle_frames=inclusive
--config.data.spatial=area --config.data.time_sampling=ends``. The normalisation is a choice (below).
"""

from __future__ import annotations

import ml_collections

from coreecho_jax.configs import check_variant, transfer
from coreecho_jax.data import clips


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The HMC-QU transfer configuration (no variants; see configs/hmcqu_demo.py)."""
    check_variant(arg, (), "hmcqu")
    # [21]'s preprocessing (module doc); the old protocol's values in brackets
    c = transfer.transfer_config(
        "hmcqu",
        view="A4C",  # A4C (the paper's) or A2C
        folds="shipped",  # shipped: the paper's folds (package data); stratified: seeded folds
        n_folds=5,  # stratified only
        frames=12,  # [21]: the cycle resampled to 12 frames  [16]
        image_size=224,  # [21]: 224 px  [112]
        crop_fraction=170 / 224,  # [21]: resize 224, centre crop 170, resize 224
        # Choice: EchoNet's normalisation, the input statistics the CoReEcho encoder was trained on (its
        # first layers expect them); [21]'s own /255 served its own encoder: data.mean=0.0, data.std=255.0.
        mean=tuple(float(x) for x in clips.MEAN),
        std=tuple(float(x) for x in clips.STD),
        n_videos=60,  # synthetic recordings (about 2/3 with masks)
    )
    # the download: the Kaggle one (A4C.xlsx, HMC-QU/A4C/*.avi) (data.root)
    c.data.fold_seed = 0  # stratified only
    c.data.subset = "masks"  # masks: the 109 videos with masks (the paper's); all: the 162
    c.data.fold_file = ""  # another fold CSV (name, Fold columns); "": the shipped one of the subset
    c.data.cycle_frames = "ref21"  # [21]: start .. end - 1 (ES00071: every other frame)  [inclusive]
    c.data.spatial = "ref21"  # [21]: PIL grey + bicubic, crop, bilinear; float clips  [area]
    c.data.time_sampling = "centres"  # [21]: trilinear, align_corners=False  [ends]
    c.data.synthetic.mi_segments = (1, 1)  # adjacent MI segments per MI video, drawn in lo..hi
    c.data.synthetic.mi_segment_motion = 0.1  # share of normal wall motion left in them (0: akinetic)
    return c
