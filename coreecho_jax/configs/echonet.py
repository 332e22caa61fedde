"""CoReEcho on EchoNet-Dynamic, as the official code runs it.

    coreecho train --config=echonet --workdir=runs/echonet \
        --config.data.root=/data/EchoNet-Dynamic \
        --config.model.init_from=/weights/uniformer_small_k400_16x8.pth \
        --config.data.test_start_indexes=/data/test_start_indexes.pkl

Every default reproduces the official behaviour (BioMedIA-MBZUAI/CoReEcho: ``train.py`` and
``train_lp.py`` with the README's flags, ``test_with_three_clips.py``); improvements are switches whose
default is off. "Official" below names the official flag or code that a value comes from.

<data home> is $COREECHO_DATA_DIR, else $XDG_CACHE_HOME/coreecho_jax, else ~/.cache/coreecho_jax: prepared
data lives there once per machine (coreecho_jax.data.echonet.inputs.data_home).
"""

from __future__ import annotations

import ml_collections

from coreecho_jax.configs import check_variant
from coreecho_jax.data import echonet_layout as layout


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The paper configuration; ``arg`` names a variant (this file has none)."""
    check_variant(arg, (), "echonet")
    c = ml_collections.ConfigDict()
    c.seed = 0  # run seed: init, dropout, train order, val clip starts, bootstrap (official --trial 0)

    c.data = ml_collections.ConfigDict()
    c.data.root = ""  # folder with FileList.csv, Videos/, VolumeTracings.csv (required; a path, not compared)
    c.data.data_dir = ""  # prepared TFDS data; "" -> <data home>/tfds, shared (a path, not compared)
    c.data.drop_untraced = True  # drop videos with < 2 traced frames, as echonet/dynamic and CoReEcho do
    c.data.frames = layout.CLIP_FRAMES  # frames per clip (official --frames 36)
    c.data.stride = layout.CLIP_STRIDE  # frames between sampled frames (official --frequency 4)
    c.data.pad = layout.TRANSLATION_PAD  # train translation, px per side (official PadIfNeeded 124, crop 112)
    c.data.image_size = layout.FRAME_SIZE  # model input, px; != 112 resizes after the crop (official 112)
    c.data.channels = 3  # 3: RGB as the official loader reads it; 1: one stored channel copied to 3 (disk)
    c.data.augment = True  # train translation +-pad px (official --aug); False: centre crop (Table 3 w/o A)
    c.data.independent_views = True  # stage 1: 2 independent clips per video (official); False: 1 clip twice
    c.data.test_start_indexes = ""  # official test_start_indexes.pkl or our JSON; "" -> drawn from eval.seed
    c.data.drop_truncated = False  # True drops videos that decode fewer frames than their header says
    c.data.hash_videos = False  # True keys the prepared data on each video's SHA-1, not its size + mtime
    c.data.shuffle_buffer = 8192  # train videos in the shuffle buffer; >= 7465 = a full shuffle (official)
    c.data.synthetic = ml_collections.ConfigDict()
    c.data.synthetic.enabled = False  # True: first write a synthetic set into data.root ("" -> <data home>)
    c.data.synthetic.n_videos = 512  # videos of the synthetic set, split 75/12.5/12.5 % train/val/test
    c.data.synthetic.seed = 0  # seed of the synthetic videos and labels
    c.data.synthetic.write_masks = False  # True also writes masks/<FileName>.npz (per-frame LV cavity)

    c.model = ml_collections.ConfigDict()
    c.model.preset = "small"  # UniFormer-S: depth [3,4,8,3], dims [64,128,320,512], head_dim 64 (official)
    c.model.dropout = 0.1  # encoder dropout (official uniformer_small drop_rate 0.1)
    c.model.drop_path = 0.0  # encoder stochastic depth, max rate over the blocks (official 0)
    c.model.head_dropout = 0.4  # regression head dropout (official Regressor p=0.4)
    c.model.head_bias_init = 55.6  # initial output bias, EF % (official Regressor); None: torch default init
    c.model.dtype = "float32"  # switch: "bfloat16" computes in bf16 with float32 parameters
    c.model.remat = False  # switch: rematerialise each stage (jax.checkpoint) to save memory; same math
    c.model.depthwise = "auto"  # depthwise 3-D conv: auto | lax | shifted | shifted_autodiff (same math)
    c.model.attention = "auto"  # self-attention: auto | einsum | xla | cudnn (same math; cudnn: GPU bf16)
    c.model.dropout_rng = "hash"  # dropout masks: "hash" (fast on CPU) | "jax" (jax.random.bernoulli)
    c.model.rng_impl = "rbg"  # JAX key implementation of init/dropout: rbg | unsafe_rbg | threefry2x32
    c.model.unbiased_running_var = True  # BatchNorm running var from the unbiased batch var, as torch does
    c.model.init_from = ""  # Kinetics-400 UniFormer .pth (or CoReEcho best.pth) to start from

    c.loss = ml_collections.ConfigDict()
    c.loss.temperature = 1.0  # RnC temperature (official README --temp 1.0; the RnCLoss default is 2)
    c.loss.rnc_weight = 1.0  # 0 -> the paper's L1-only baseline: L1 through encoder and head
    c.loss.implementation = "auto"  # RnC: "pairwise" | "sorted" | "auto" (same loss, different cost)

    c.stage1 = ml_collections.ConfigDict()  # encoder + head: RnC on the embedding, L1 on the head
    c.stage1.epochs = 26  # official range(0, 25 + 1): 26 epochs (the paper says 25)
    c.stage1.batch_size = 16  # videos per step, 2 clips each -> 32 clips (official --batch_size 16)
    c.stage1.lr = 1e-4  # AdamW learning rate (official --learning_rate 1e-4)
    c.stage1.weight_decay = 1e-4  # AdamW decay on every parameter, as torch.optim.AdamW (official 1e-4)
    c.stage1.lr_decay_epoch = 15  # lr x lr_decay_rate from this epoch on (official --lr_step_epoch 15)
    c.stage1.lr_decay_rate = 0.1  # (official --lr_decay_rate 0.1)

    c.stage2 = ml_collections.ConfigDict()  # MLP probing: frozen encoder, the head trains
    c.stage2.epochs = 5  # official range(0, 4 + 1): 5 epochs
    c.stage2.batch_size = 16  # videos per step, 1 clip each (official --batch_size 16)
    c.stage2.lr = 1e-4  # constant AdamW learning rate (official train_lp.py 1e-4)
    c.stage2.weight_decay = 1e-4  # (official 1e-4)

    c.eval = ml_collections.ConfigDict()
    c.eval.n_clips = 3  # clips per video, predictions averaged (official test_with_three_clips.py: 3)
    c.eval.batch_size = 16  # videos per eval batch (x n_clips clips); speed only, not compared on resume
    c.eval.bootstrap = 1000  # bootstrap resamples for the 95% confidence intervals; 0: no intervals
    c.eval.seed = 0  # seeds the test clip starts when data.test_start_indexes is ""; val starts use seed
    c.eval.interval_level = 0.9  # EF intervals, split conformal on val (not in the paper; extra result keys)

    c.run = ml_collections.ConfigDict()
    c.run.stages = "1,2"  # which stages to run; a later run may add stage 2 into the same workdir
    c.run.log_every = 10  # steps between train scalars in metrics.jsonl and TensorBoard
    c.run.distributed = False  # several hosts (docs/training.md, Several hosts): start jax.distributed first
    c.run.coordinator = ""  # "host:port" of process 0; "": from JAX_COORDINATOR_ADDRESS or SLURM / MPI
    c.run.num_processes = -1  # processes in the run; -1: from JAX_NUM_PROCESSES or SLURM / MPI
    c.run.process_id = -1  # this process, 0..num_processes-1; -1: from JAX_PROCESS_ID or SLURM / MPI
    c.run.max_steps_per_epoch = 0  # >0 truncates epochs (smoke tests only)
    return c
