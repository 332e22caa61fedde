"""CoReEcho transfer to CAMUS (Table 4): EF regression from the A4C half cycle, 10-fold cross-validation.

    coreecho train --config=camus --workdir=runs/camus_probe \
        --config.data.root=/data/CAMUS_public --config.transfer.mode=probe \
        --config.transfer.init=runs/echonet          # a coreecho-jax run, or best.pth, or K400 .pth
    coreecho train --config=camus --workdir=runs/camus_ft --config.transfer.mode=finetune ...
    ... --config.transfer.mode=finetune --config.transfer.init=""   # the paper's Scratch row
    ... --config.transfer.folds=0,3                  # a subset of the folds

Faithful where the official code says: the folds (sorted patients, fold k holds out [50k, 50k + 50)),
the normalisation (40.94405, 54.723774 on 0..255), the augmentation (RandomAffine(10, translate 0.1,
scale 0.8-1.1), nearest, fill 0, one draw per clip), MSE loss, a fresh CoReEcho head. Everything the
paper leaves unpublished (frames per clip, hyperparameters) is a field below, marked "choice".
"""

from __future__ import annotations

import ml_collections

from coreecho_jax.configs import check_variant, transfer
from coreecho_jax.data.transfer.camus import CAMUS_MEAN, CAMUS_STD


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The CAMUS transfer configuration (no variants; see configs/camus_demo.py)."""
    check_variant(arg, (), "camus")
    c = transfer.transfer_config(
        "camus",
        view="4CH",  # 4CH (the paper's) or 2CH
        # official: CoReEcho's contiguous folds; split_files: the CAMUS team's split files, which in the
        # 2023 release are one split (subgroup_{training,validation,testing}.txt): 1 fold, not a 10-fold CV
        folds="official",
        n_folds=10,  # official folds (the paper's 10-fold CV)
        frames=16,  # choice: the ED -> ES half cycle resampled to 16 frames (linear in time)
        image_size=112,  # px, the EchoNet frame size CoReEcho was trained on
        crop_fraction=1.0,  # the whole image, resized (aspect not kept, as the CAMUS lab's code)
        mean=(CAMUS_MEAN,) * 3,  # official CAMUSTransferLearning normalisation (0..255 scale)
        std=(CAMUS_STD,) * 3,  # official; a tuple: --config.data.std=54.7,54.7,54.7 overrides it
        n_videos=100,  # synthetic patients
    )
    # the download: CAMUS_public/ of 2023, or the 2019 training/ folder's parent (data.root)
    c.data.split_dir = ""  # split_files: folder of subgroup*_{training,validation,testing}.txt
    return c
