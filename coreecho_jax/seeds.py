"""Every seed the package derives from a run seed: the named salts that keep its streams apart, and the
derivation.

A derived seed is a pure function of the run seed and of where it is used (stage, fold, epoch, batch,
row, video), through numpy's :class:`~numpy.random.SeedSequence` of the integer words
``(seed, ..., salt)``. So a resumed run, any process count and any batch order draw the same numbers,
and two uses never share a stream: their words differ (a salt, or their count). The salt is a word of
the sequence, not added to the seed, and its position is part of each site's layout below. Changing a
salt or a layout changes that stream, and with it the numbers of every run: ``tests/test_seeds.py``
pins the value each site derives.

Where each stream is used (words in order; ``seed`` is ``config.seed`` unless named):

========================================  ===========================================================
``(seed, stage, epoch)``                  CoReEcho dropout of a stage's epoch (``train.loop``; no salt)
``(eval.seed, CALIBRATION_STARTS)``       the calibration's clip starts (``train.loop``)
``(seed, VAL_STARTS, epoch)``             the validation clip starts of an epoch (``data.echonet.inputs``)
``(seed, fold, HEAD_INIT)``               a transfer fold's fresh head (``transfer.loop``)
``(seed, fold, epoch, TRANSFER_DROPOUT)`` transfer dropout of a fold's epoch (``transfer.loop``)
``(seed, fold, epoch, TRAIN_ORDER)``      a transfer epoch's order (``data.transfer.cycles``)
``(seed, fold, epoch, batch, row, AFFINE)``  a transfer clip's RandomAffine (``data.transfer.cycles``)
``(fold_seed, STRATIFIED_FOLDS)``         HMC-QU's seeded stratified folds (``data.folds``)
``(seed, index)``                         synthetic video ``index`` (``data.synthetic.heart``; no salt)
``(seed, SYNTHETIC_ECHONET_SPLITS)``      the synthetic EchoNet split (``data.synthetic.echonet``)
``(seed, SYNTHETIC_CAMUS)``               the synthetic CAMUS qualities and order (``data.synthetic.camus``)
``(seed, SYNTHETIC_HMCQU)``               the synthetic HMC-QU masks, MI and segments (``data.synthetic.hmcqu``)
``(seed, SYNTHETIC_MANIFEST)``            the synthetic cohort's labels, cycles and folds (``data.synthetic.manifest``)
``(seed mod 2**32, crc32(name))``         a video's clip starts (``data.echonet.start_indexes``; no salt)
========================================  ===========================================================

The tf.data input pipeline (``data.echonet.pipeline``) draws in TensorFlow, statelessly: its key is
``(seed, PIPELINE)`` folded with the epoch, video and view for a clip's start and translation,
``(seed, PIPELINE + 1)`` folded with the epoch for the file order and ``(seed, PIPELINE + 2)`` for the
shuffle window. This module imports neither JAX nor TensorFlow.
"""

from __future__ import annotations

import numpy as np

#: A transfer fold's fresh head.
HEAD_INIT = 0x4EAD
#: Transfer dropout of a fold's epoch.
TRANSFER_DROPOUT = 0xD0
#: The order of a transfer epoch's training rows.
TRAIN_ORDER = 0x0D
#: The RandomAffine of a transfer training clip.
AFFINE = 0xAF
#: Seeded stratified folds (HMC-QU).
STRATIFIED_FOLDS = 0x5F01D
#: The validation clip starts of a CoReEcho epoch.
VAL_STARTS = 7
#: The calibration's clip starts (another stream than the test's and the validation's).
CALIBRATION_STARTS = 23
#: The synthetic EchoNet split.
SYNTHETIC_ECHONET_SPLITS = 0x5B11
#: The synthetic CAMUS qualities and ES-first patients.
SYNTHETIC_CAMUS = 0xCA305
#: The synthetic HMC-QU masks, MI labels and segments.
SYNTHETIC_HMCQU = 0x4DC0
#: The synthetic cohort's classes, rows with a cycle and infarct territories (a manifest of your own).
SYNTHETIC_MANIFEST = 0x3A41F
#: The tf.data pipeline's base salt ("core"); the file order adds 1, the shuffle window 2.
PIPELINE = 0x636F7265


def derive(*words: int) -> int:
    """One 32-bit seed (an int in ``[0, 2**32)``) from non-negative integer ``words`` (module doc)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1)[0])


def generator(*words: int) -> np.random.Generator:
    """A numpy generator seeded from non-negative integer ``words`` (module doc)."""
    return np.random.default_rng(np.random.SeedSequence([int(w) for w in words]))
