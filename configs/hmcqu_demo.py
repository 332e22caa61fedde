"""The HMC-QU transfer demo: synthetic HMC-QU (MI only in the wall motion), a tiny UniFormer, 5 folds.

    python main.py --config=configs/hmcqu_demo.py --workdir=/tmp/hmcqu_ft --config.transfer.mode=finetune \
        --config.transfer.init=/tmp/coreecho_demo                  # the EchoNet demo's run

Variant ``:quick`` (20 recordings, 8-frame 32 px clips, fold 0, 2 epochs of 2 steps) is the
end-to-end smoke test. See configs/camus_demo.py for the shared settings.
"""

from __future__ import annotations

import ml_collections

from configs import camus_demo, echonet, hmcqu


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = echonet.check_variant(arg, camus_demo.VARIANTS, "configs/hmcqu_demo.py")
    c = camus_demo.shrink(hmcqu.get_config(), variant)
    c.data.synthetic.n_videos = 20 if variant == "quick" else 90  # about 2/3 with masks: the set used
    c.data.synthetic.size = 112
    return c
