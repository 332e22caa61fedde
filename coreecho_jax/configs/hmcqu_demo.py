"""The HMC-QU transfer demo: synthetic HMC-QU (MI only in the wall motion), a tiny UniFormer, 5 folds
(150 recordings, ~100 with masks).

    coreecho train --config=hmcqu_demo --workdir=/tmp/hmcqu_ft --config.transfer.mode=finetune \
        --config.transfer.init=/tmp/coreecho_demo                  # the EchoNet demo's run

The clips follow configs/hmcqu.py's preprocessing ([21]'s steps and 12 frames) but are 64 px instead
of 224 px, for CPU time (the tiny demo encoder was trained at 64 px). Variant ``:quick`` (20
recordings, 8-frame 32 px clips, fold 0, 2 epochs of 2 steps) is the end-to-end smoke test. See
configs/camus_demo.py for the shared settings.
"""

from __future__ import annotations

import ml_collections

from coreecho_jax.configs import camus_demo, check_variant, hmcqu


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = check_variant(arg, camus_demo.VARIANTS, "hmcqu_demo")
    c = camus_demo.shrink(hmcqu.get_config(), variant)
    c.data.synthetic.n_videos = 20  # about 2/3 with masks: the set used
    if variant != "quick":
        # 150 recordings: ~100 with masks, 80 train / 20 test per fold. One hypokinetic segment (motion
        # 0.1) is about a pixel of wall motion at 64 px and was not learned (docs/transfer.md, The
        # transfer demos): here an infarct is an akinetic territory of 1-3 adjacent segments, as
        # coronary territories are. Smaller batches and more steps than the CAMUS demo.
        c.data.synthetic.n_videos = 150
        c.data.synthetic.mi_segments = (1, 3)
        c.data.synthetic.mi_segment_motion = 0.0
        c.probe.batch_size = 8
        c.probe.epochs = 40
        c.finetune.batch_size = 8
        c.finetune.epochs = 60
        c.finetune.lr = 3e-4
    return c
