"""The demo: CoReEcho on synthetic echocardiograms, both stages and the test evaluation on a laptop CPU.

    python main.py --config=configs/demo.py --workdir=/tmp/coreecho_demo

The synthetic set is written in the EchoNet-Dynamic layout into <workdir>/synthetic (or data.root) and
goes through the same reader, TFDS builder and pipeline as real data. The model is a small UniFormer
(same code, smaller widths and depth) on 16-frame 64x64 clips so that a run fits in minutes on 2 cores.
"""

import ml_collections

from configs import echonet


def get_config() -> ml_collections.ConfigDict:
    c = echonet.get_config()
    c.data.synthetic.enabled = True
    c.data.synthetic.n_videos = 512
    c.data.frames = 16
    c.data.stride = 4
    c.data.image_size = 64
    c.data.shuffle_buffer = 1024

    c.model.preset = "tiny"  # depth [1,1,1,1], dims [16,32,64,128], head_dim 16

    c.stage1.epochs = 29
    c.stage1.lr = 1e-3  # small models on small data need a larger step than the paper's 1e-4
    c.stage1.lr_decay_epoch = 22
    c.stage2.epochs = 3
    c.stage2.lr = 1e-3
    c.eval.batch_size = 32
    c.eval.bootstrap = 200
    return c
