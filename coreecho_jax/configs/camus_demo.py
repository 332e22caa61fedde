"""The CAMUS transfer demo: synthetic CAMUS (2023 layout), a tiny UniFormer, 10 folds, on a laptop CPU.

    coreecho train --config=camus_demo --workdir=/tmp/camus_probe \
        --config.transfer.init=/tmp/coreecho_demo                  # the EchoNet demo's run
    coreecho train --config=camus_demo --workdir=/tmp/camus_ft --config.transfer.mode=finetune \
        --config.transfer.init=/tmp/coreecho_demo

Without ``transfer.init`` the encoder starts at random: fine-tuned (``--config.transfer.mode=finetune``)
that is the paper's Scratch row; probing it is refused unless ``--config.transfer.probe_random_encoder=True``
asks for it as a control. The architecture is the one of the run named by ``transfer.init`` (read from
its config.json, and recorded in the workdir's); the demo's is ``configs/demo.py``'s tiny UniFormer.
Variant ``:quick`` (20 patients, 8-frame 32 px clips, fold 0, 2 epochs of 2 steps) is the end-to-end
smoke test.
"""

from __future__ import annotations

import ml_collections

from coreecho_jax.configs import camus, check_variant

VARIANTS = ("quick",)


def shrink(c: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """The demo settings both transfer demos share (synthetic data, tiny model, small clips)."""
    c.data.synthetic.enabled = True
    c.data.image_size = 64  # as configs/demo.py
    c.model.preset = "tiny"  # as configs/demo.py: depth [1,1,1,1], dims [16,32,64,128]
    c.probe.epochs = 20
    c.probe.lr = 1e-3
    c.finetune.epochs = 20
    c.finetune.lr = 1e-3  # a tiny model on small data, as configs/demo.py
    if variant == "quick":
        c.data.frames = 8
        c.data.image_size = 32
        c.transfer.folds = "0"
        for section in (c.probe, c.finetune):
            section.epochs = 2
            section.batch_size = 4
        c.eval.batch_size = 4
        c.run.max_steps_per_epoch = 2
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = check_variant(arg, VARIANTS, "camus_demo")
    c = shrink(camus.get_config(), variant)
    c.data.synthetic.n_videos = 20 if variant == "quick" else 100  # 90 train / 10 test patients per fold
    return c
