"""The cohort demo: a synthetic manifest (videos and manifest.csv written first), a tiny UniFormer, on CPU.

    coreecho train --config=custom_demo:quick --workdir=/tmp/cohort_quick \
        --config.transfer.mode=finetune                                   # about a minute
    coreecho train --config=custom_demo --workdir=/tmp/cohort_ef --config.transfer.mode=finetune \
        --config.transfer.init=/tmp/coreecho_demo                         # the EchoNet demo's run
    coreecho train --config=custom_demo:classification --workdir=/tmp/cohort_cls ...

Regression (default): synthetic EchoNet-style videos with their EF, half of the rows with the ED -> ES
frames, the others the whole loop; seeded stratified folds (no fold column). Classification: synthetic
HMC-QU-style recordings, label 1 for an akinetic territory of 1-3 wall segments, every row with its
cycle, and a fold column (5 stratified folds) the reader uses. The manifest and videos go to
``<workdir>/synthetic`` (coreecho_jax/data/synthetic/manifest.py). See configs/camus_demo.py for the
shared demo settings. ``:quick`` (``:classification_quick``): 20 videos, 8-frame 32 px clips, 2 epochs
of 2 steps; the regression runs both of 2 folds (so its intervals are cross-fitted on the other fold),
the classification fold 0 of the manifest's 5.
"""

from __future__ import annotations

import ml_collections

from coreecho_jax.configs import camus_demo, check_variant, custom

VARIANTS = ("quick", "classification", "classification_quick")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = check_variant(arg, VARIANTS, "custom_demo")
    kind = "classification" if variant.startswith("classification") else "regression"
    quick = variant.endswith("quick")
    c = camus_demo.shrink(custom.get_config(kind), "quick" if quick else "")
    c.data.frames = 8 if quick else 16  # CPU time (configs/custom.py: 36)
    c.data.synthetic.n_videos = 20 if quick else 100
    if quick and kind == "regression":
        c.data.n_folds = 2
        c.transfer.folds = ""  # both folds: each one's intervals fitted on the other's tested videos
    return c
