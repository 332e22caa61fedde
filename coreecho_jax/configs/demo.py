"""The demo: CoReEcho on synthetic echocardiograms, both stages and the test evaluation on a laptop CPU.

    coreecho train --config=demo --workdir=/tmp/coreecho_demo
    coreecho train --config=demo:quick --workdir=/tmp/coreecho_quick   # a smoke run

The synthetic set is written in the EchoNet-Dynamic layout once per machine, into
<data home>/synthetic/echonet_n512_seed0_<hash> (or data.root; see configs/echonet.py), and goes through
the same reader, TFDS builder and pipeline as real data; a second run into another workdir reuses it
and its preparation. The model is a small UniFormer
(same code, smaller widths and depth) on 16-frame 64x64 clips so that a run fits in minutes on 2 cores.

Variants (``--config=demo:<variant>``):
  quick: 40 videos, 8-frame 32x32 clips, 3 + 1 epochs of 7 steps of batch 4, 20 bootstrap resamples:
    the whole path (data, both stages, test) in about two minutes of CPU time, mostly compilation; for
    end-to-end tests and benchmarks.
"""

from __future__ import annotations

import ml_collections

from coreecho_jax.configs import check_variant, echonet

VARIANTS = ("quick",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The demo configuration, or its ``quick`` variant (``arg="quick"``)."""
    variant = check_variant(arg, VARIANTS, "demo")
    c = echonet.get_config()
    c.data.synthetic.enabled = True
    c.data.synthetic.n_videos = 512  # 384 train, 64 val, 64 test videos
    c.data.frames = 16  # 16-frame clips at stride 4 cover 64 frames, about 1.3 cardiac cycles
    c.data.stride = 4
    c.data.image_size = 64  # the synthetic videos are 112 x 112, resized to 64 after the crop
    c.data.shuffle_buffer = 1024  # >= the train split: a full shuffle

    c.model.preset = "tiny"  # depth [1,1,1,1], dims [16,32,64,128], head_dim 16

    c.stage1.epochs = 29
    c.stage1.lr = 1e-3  # small models on small data need a larger step than the paper's 1e-4
    c.stage1.lr_decay_epoch = 22
    c.stage2.epochs = 3
    c.stage2.lr = 1e-3
    c.eval.batch_size = 32
    c.eval.bootstrap = 200

    if variant == "quick":
        c.data.synthetic.n_videos = 40  # 30 train, 5 val, 5 test videos
        c.data.frames = 8
        c.data.image_size = 32  # the smallest size the UniFormer's four downsamplings allow
        c.stage1.epochs = 3
        c.stage1.batch_size = 4
        c.stage1.lr_decay_epoch = 2
        c.stage2.epochs = 1
        c.stage2.batch_size = 4
        c.eval.batch_size = 4
        c.eval.bootstrap = 20
        c.run.log_every = 1
    return c
