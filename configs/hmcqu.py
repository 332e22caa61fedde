"""CoReEcho transfer to HMC-QU (Table 5): myocardial-infarction classification, A4C, stratified 5-fold CV.

    python main.py --config=configs/hmcqu.py --workdir=runs/hmcqu_ft \
        --config.data.root=/data/HMC-QU --config.transfer.mode=finetune \
        --config.transfer.init=runs/echonet

The paper's subset (the 109 A4C videos with masks, 72 MI / 37 normal) and its five stratified folds
(shipped with the package) are the defaults. A video is MI when any segment is MI. Preprocessing after
the paper's reference [21]: the annotated cycle, grey, a centred crop of 170/224 of each side, resized;
the frame count and the normalisation are choices (fields below).
"""

from __future__ import annotations

import ml_collections

from configs import camus, echonet
from coreecho_jax.data import clips


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The HMC-QU transfer configuration (no variants; see configs/hmcqu_demo.py)."""
    echonet.check_variant(arg, (), "configs/hmcqu.py")
    c = camus.get_config()
    c.task = "hmcqu"
    c.data.root = ""  # the Kaggle download (A4C.xlsx, HMC-QU/A4C/*.avi)
    c.data.view = "A4C"  # A4C (the paper's) or A2C
    c.data.folds = "shipped"  # shipped: the paper's folds (package data); stratified: seeded folds
    c.data.n_folds = 5  # stratified only
    c.data.fold_seed = 0  # stratified only
    c.data.subset = "masks"  # masks: the 109 videos with masks (the paper's); all: the 162
    c.data.fold_file = ""  # another fold CSV (name, Fold columns); "": the shipped one of the subset
    c.data.split_dir = ""  # CAMUS only
    c.data.frames = 16  # choice ([21]: 12): the annotated cycle resampled to 16 frames
    c.data.crop_fraction = 170 / 224  # [21]: resize 224, centre crop 170, resize
    c.data.mean = tuple(float(x) for x in clips.MEAN)  # choice: EchoNet's, what the CoReEcho encoder saw
    c.data.std = tuple(float(x) for x in clips.STD)  # tuples: overridable as --config.data.std=a,b,c
    c.data.augment = True  # choice: the CAMUS augmentation ([21]'s is not published)
    c.data.synthetic.n_videos = 60  # recordings (about 2/3 with masks)
    c.data.synthetic.mi_segments = (1, 1)  # adjacent MI segments per MI video, drawn in lo..hi
    c.data.synthetic.mi_segment_motion = 0.1  # share of normal wall motion left in them (0: akinetic)
    return c
