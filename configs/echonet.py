"""CoReEcho on EchoNet-Dynamic, as the official code runs it (docs: REFERENCE.md sections 3-5).

    python main.py --config=configs/echonet.py --workdir=runs/echonet \
        --config.data.root=/data/EchoNet-Dynamic \
        --config.model.init_from=/weights/uniformer_small_k400_16x8.pth \
        --config.data.test_start_indexes=/data/test_start_indexes.pkl

Every default reproduces the official behaviour; improvements are switches whose default is off.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # official set_seed(trial=0)

    c.data = ml_collections.ConfigDict()
    c.data.name = "echonet"
    c.data.root = ""  # folder with FileList.csv, Videos/, VolumeTracings.csv (required)
    c.data.data_dir = ""  # where the prepared TFDS dataset lives; "" -> <workdir>/tfds
    c.data.drop_untraced = True  # drop videos with < 2 traced frames, as echonet/dynamic and CoReEcho do
    c.data.frames = 36  # frames per clip
    c.data.stride = 4  # sampling period ("frequency"); videos shorter than frames*stride are padded
    c.data.pad = 6  # +-6 px translation (PadIfNeeded 124, RandomCrop 112)
    c.data.image_size = 112  # model input size; != 112 resizes after the crop
    c.data.test_start_indexes = ""  # official test_start_indexes.pkl or our JSON; "" -> drawn and saved
    c.data.shuffle_buffer = 8192
    c.data.synthetic = ml_collections.ConfigDict()
    c.data.synthetic.enabled = False  # True: write a synthetic set into data.root first
    c.data.synthetic.n_videos = 512
    c.data.synthetic.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.preset = "small"  # UniFormer-S: depth [3,4,8,3], dims [64,128,320,512], head_dim 64
    c.model.dropout = 0.1
    c.model.head_dropout = 0.4
    c.model.head_bias_init = 55.6
    c.model.dtype = "float32"  # switch: "bfloat16" computes in bf16 with float32 parameters
    c.model.remat = False  # switch: rematerialise each stage (jax.checkpoint) to save memory
    c.model.depthwise = "auto"  # depthwise 3-D conv implementation, chosen per backend
    c.model.init_from = ""  # Kinetics-400 UniFormer .pth (or CoReEcho best.pth) to start from

    c.loss = ml_collections.ConfigDict()
    c.loss.temperature = 1.0  # the README's --temp 1.0 (the RnCLoss constructor default is 2)
    c.loss.rnc_weight = 1.0  # 0 -> the paper's L1-only baseline: L1 through encoder and head
    c.loss.implementation = "auto"  # RnC: "pairwise" | "sorted" | "auto"

    c.stage1 = ml_collections.ConfigDict()
    c.stage1.epochs = 26  # the official loop runs range(0, 25 + 1): 26 epochs (the paper says 25)
    c.stage1.batch_size = 16  # videos per step -> 32 clips through the encoder
    c.stage1.lr = 1e-4
    c.stage1.weight_decay = 1e-4  # AdamW, decay on every parameter as torch.optim.AdamW does
    c.stage1.lr_decay_epoch = 15  # lr x lr_decay_rate from this epoch on
    c.stage1.lr_decay_rate = 0.1

    c.stage2 = ml_collections.ConfigDict()
    c.stage2.epochs = 5  # the official loop runs range(0, 4 + 1)
    c.stage2.batch_size = 16
    c.stage2.lr = 1e-4
    c.stage2.weight_decay = 1e-4

    c.eval = ml_collections.ConfigDict()
    c.eval.n_clips = 3  # clips per video, predictions averaged
    c.eval.batch_size = 16  # videos per eval batch (x n_clips clips)
    c.eval.bootstrap = 1000  # bootstrap resamples for the 95% confidence intervals
    c.eval.seed = 0  # seed of the drawn val/test clip starts

    c.run = ml_collections.ConfigDict()
    c.run.stages = "1,2"  # which stages to run
    c.run.log_every = 10  # steps between TensorBoard scalars
    c.run.distributed = False  # jax.distributed.initialize() for multi-host runs
    c.run.max_steps_per_epoch = 0  # >0 truncates epochs (smoke tests only)
    return c
