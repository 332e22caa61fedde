"""CoReEcho transfer to CAMUS (Table 4): EF regression from the A4C half cycle, 10-fold cross-validation.

    python main.py --config=configs/camus.py --workdir=runs/camus_probe \
        --config.data.root=/data/CAMUS_public --config.transfer.mode=probe \
        --config.transfer.init=runs/echonet          # a coreecho-jax run, or best.pth, or K400 .pth
    python main.py --config=configs/camus.py --workdir=runs/camus_ft --config.transfer.mode=finetune ...
    ... --config.transfer.mode=finetune --config.transfer.init=""   # the paper's Scratch row
    ... --config.transfer.folds=0,3                  # a subset of the folds

Faithful where the official code says: the folds (sorted patients, fold k holds out [50k, 50k + 50)),
the normalisation (40.94405, 54.723774 on 0..255), the augmentation (RandomAffine(10, translate 0.1,
scale 0.8-1.1), nearest, fill 0, one draw per clip), MSE loss, a fresh CoReEcho head. Everything the
paper leaves unpublished (frames per clip, hyperparameters) is a field below, marked "choice".
"""

from __future__ import annotations

import ml_collections

from configs import echonet
from coreecho_jax.data.camus import CAMUS_MEAN, CAMUS_STD


def transfer_sections(c: ml_collections.ConfigDict) -> None:
    """The fields CAMUS and HMC-QU share: model, transfer, probe, finetune, eval, run."""
    c.seed = 0  # run seed: head init, train order, augmentation, dropout (per fold and epoch)
    c.model = echonet.get_config().model  # UniFormer-S + CoReEcho head (architecture of transfer.init)
    del c.model["init_from"]  # the encoder comes from transfer.init
    c.transfer = ml_collections.ConfigDict()
    c.transfer.mode = "probe"  # probe: frozen encoder (eval mode), fresh head trains; finetune: everything
    c.transfer.init = ""  # a coreecho-jax run workdir, best.pth, K400 .pth or imported folder; "": random
    # A random encoder is the paper's Scratch row only fine-tuned (transfer.mode=finetune). Probing one is no
    # row of the paper: refused unless this switch asks for it as a control.
    c.transfer.probe_random_encoder = False
    c.transfer.folds = ""  # "": every fold; "0,3": those folds (0-based); results.json covers those run
    # Hyperparameters are unpublished (choices). AdamW, constant lr; the last epoch is tested unless the
    # fold has a validation set (split files), where the best validation epoch is.
    c.probe = ml_collections.ConfigDict()
    c.probe.epochs = 30  # choice
    c.probe.batch_size = 16  # videos per step (choice; CoReEcho's batch)
    c.probe.lr = 1e-3  # choice: a fresh head on a small set; 10x CoReEcho's stage-2 lr
    c.probe.weight_decay = 1e-4  # CoReEcho's
    c.finetune = ml_collections.ConfigDict()
    c.finetune.epochs = 30  # choice
    c.finetune.batch_size = 16  # choice
    c.finetune.lr = 1e-4  # choice: CoReEcho's stage-1 lr, for encoder and head alike
    c.finetune.weight_decay = 1e-4  # CoReEcho's
    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 16  # videos per eval batch (speed only)
    c.eval.threshold = 0.5  # HMC-QU: MI when the probability > threshold ([21]: round(sigmoid), 0.5 -> 0)
    c.eval.threshold_inclusive = False  # True: MI when the probability >= threshold
    c.run = ml_collections.ConfigDict()
    c.run.log_every = 10  # unused by the transfer loop's per-epoch log; kept for the shared CLI
    c.run.distributed = False  # several hosts (README: Several hosts): start jax.distributed first
    c.run.coordinator = ""  # "host:port" of process 0; "": from JAX_COORDINATOR_ADDRESS or SLURM / MPI
    c.run.num_processes = -1  # processes in the run; -1: from JAX_NUM_PROCESSES or SLURM / MPI
    c.run.process_id = -1  # this process, 0..num_processes-1; -1: from JAX_PROCESS_ID or SLURM / MPI
    c.run.max_steps_per_epoch = 0  # >0 truncates epochs (smoke tests only)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The CAMUS transfer configuration (no variants; see configs/camus_demo.py)."""
    echonet.check_variant(arg, (), "configs/camus.py")
    c = ml_collections.ConfigDict()
    c.task = "camus"
    c.data = ml_collections.ConfigDict()
    c.data.root = ""  # the download (CAMUS_public/ of 2023, or the 2019 training/ folder's parent)
    c.data.view = "4CH"  # 4CH (the paper's) or 2CH
    c.data.on_error = "skip"  # skip: leave a bad patient out and list it; raise: stop at the first
    # official: CoReEcho's contiguous folds; split_files: the CAMUS team's split files, which in the 2023
    # release are one split (subgroup_{training,validation,testing}.txt): 1 fold, not a 10-fold CV
    c.data.folds = "official"
    c.data.n_folds = 10  # official folds (the paper's 10-fold CV)
    c.data.split_dir = ""  # split_files: folder of subgroup*_{training,validation,testing}.txt
    c.data.subset = ""  # HMC-QU only
    c.data.fold_file = ""  # HMC-QU only
    c.data.fold_seed = 0  # HMC-QU only
    c.data.frames = 16  # choice: the ED -> ES half cycle resampled to 16 frames (linear in time)
    c.data.image_size = 112  # px, the EchoNet frame size CoReEcho was trained on
    c.data.crop_fraction = 1.0  # the whole image, resized (aspect not kept, as the CAMUS lab's code)
    c.data.mean = (CAMUS_MEAN,) * 3  # official CAMUSTransferLearning normalisation (0..255 scale)
    c.data.std = (CAMUS_STD,) * 3  # official; a tuple: --config.data.std=54.7,54.7,54.7 overrides it
    c.data.augment = True  # official RandomAffine on training clips
    c.data.affine_degrees = 10.0  # official
    c.data.affine_translate = 0.1  # official, share of the side
    c.data.affine_scale = (0.8, 1.1)  # official
    c.data.synthetic = ml_collections.ConfigDict()
    c.data.synthetic.enabled = False  # True: write a synthetic CAMUS download into data.root first
    c.data.synthetic.n_videos = 100  # patients
    c.data.synthetic.seed = 0
    c.data.synthetic.size = 112  # side of the drawn square, px
    transfer_sections(c)
    return c
