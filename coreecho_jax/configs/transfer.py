"""What the transfer configs share (``configs/camus.py``, ``configs/hmcqu.py``): not a config itself.

:func:`transfer_config` holds every field both datasets read, once: the data fields of the clip
preparation, folds, augmentation and synthetic set, and the model, transfer, probe, finetune, eval and
run sections. The values each dataset chooses for the shared fields (view, folds, clip size,
normalisation, ...) are its arguments; each dataset's file adds the fields only it reads.
"""

from __future__ import annotations

import ml_collections

from coreecho_jax.configs import echonet


def transfer_config(
    task: str,
    *,
    view: str,
    folds: str,
    n_folds: int,
    frames: int,
    image_size: int,
    crop_fraction: float,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    n_videos: int,
) -> ml_collections.ConfigDict:
    """The shared fields of a transfer config of ``task`` ("camus" | "hmcqu"), with the dataset's values."""
    c = ml_collections.ConfigDict()
    c.task = task
    c.data = ml_collections.ConfigDict()
    c.data.root = ""  # the download (configs/camus.py, configs/hmcqu.py say which)
    c.data.view = view  # the echocardiographic view read
    c.data.on_error = "skip"  # skip: leave a bad video out and list it; raise: stop at the first
    c.data.folds = folds  # the fold scheme (each dataset's file lists its schemes)
    c.data.n_folds = n_folds  # folds of the scheme that is computed (not of the shipped or split files)
    c.data.frames = frames  # frames of the clip the cycle is resampled to
    c.data.image_size = image_size  # px, the clip's side
    c.data.crop_fraction = crop_fraction  # centre crop (share of the side) before the resize
    c.data.mean = mean  # normalisation, 0..255 scale; tuples: --config.data.mean=a,b,c overrides them
    c.data.std = std
    c.data.augment = True  # RandomAffine on training clips (CAMUS official; HMC-QU: [21]'s datasets.py)
    c.data.affine_degrees = 10.0  # official
    c.data.affine_translate = 0.1  # official, share of the side
    c.data.affine_scale = (0.8, 1.1)  # official
    c.data.synthetic = ml_collections.ConfigDict()
    c.data.synthetic.enabled = False  # True: write a synthetic download into data.root first
    c.data.synthetic.n_videos = n_videos  # patients (CAMUS) or recordings (HMC-QU)
    c.data.synthetic.seed = 0
    c.data.synthetic.size = 112  # side of the drawn square, px
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
    # HMC-QU's decision rule; here because the transfer loop passes it to every task's fold metrics.
    c.eval.threshold = 0.5  # HMC-QU: MI when the probability > threshold ([21]: round(sigmoid), 0.5 -> 0)
    c.eval.threshold_inclusive = False  # True: MI when the probability >= threshold
    c.run = ml_collections.ConfigDict()
    c.run.log_every = 10  # unused by the transfer loop's per-epoch log; kept for the shared CLI
    c.run.distributed = False  # several hosts (docs/training.md, Several hosts): start jax.distributed first
    c.run.coordinator = ""  # "host:port" of process 0; "": from JAX_COORDINATOR_ADDRESS or SLURM / MPI
    c.run.num_processes = -1  # processes in the run; -1: from JAX_NUM_PROCESSES or SLURM / MPI
    c.run.process_id = -1  # this process, 0..num_processes-1; -1: from JAX_PROCESS_ID or SLURM / MPI
    c.run.max_steps_per_epoch = 0  # >0 truncates epochs (smoke tests only)
    return c
