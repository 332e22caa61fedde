"""The seed table (coreecho_jax.seeds): each site's derived value is pinned to what the code gave before
the salts were named, so a changed salt or word order (a changed random stream) fails here."""

import json

import numpy as np

from coreecho_jax import seeds
from coreecho_jax.data.echonet import start_indexes
from coreecho_jax.data.synthetic import echonet, heart
from coreecho_jax.data.transfer import cycles, folds
from tests.conftest import run_python


def _draws(rng: np.random.Generator) -> list[int]:
    return rng.integers(0, 1000, 5).tolist()


def test_each_derived_seed_is_the_one_the_sites_drew_before_the_table():
    # the values the inline SeedSequence calls gave at each site, for these words
    assert seeds.derive(5, 2, 7) == 1349774293  # train.loop: CoReEcho dropout (seed, stage, epoch)
    assert seeds.derive(11, seeds.CALIBRATION_STARTS) == 2022405154  # train.loop: calibration starts
    assert seeds.derive(5, seeds.VAL_STARTS, 3) == 488473482  # data.echonet.inputs: validation starts
    assert seeds.derive(5, 2, seeds.HEAD_INIT) == 1569696601  # transfer: a fold's fresh head
    assert seeds.derive(5, 2, 7, seeds.TRANSFER_DROPOUT) == 2828523245  # transfer: a fold epoch's dropout
    assert _draws(seeds.generator(5, seeds.SYNTHETIC_CAMUS)) == [475, 175, 798, 843, 729]
    assert _draws(seeds.generator(5, seeds.SYNTHETIC_HMCQU)) == [284, 50, 581, 139, 277]
    assert _draws(seeds.generator(5, seeds.SYNTHETIC_ECHONET_SPLITS)) == [133, 344, 674, 331, 934]
    assert seeds.PIPELINE == 0x636F7265  # the tf.data key's salt ("core")


def test_the_data_sites_draw_the_streams_they_drew_before():
    assert cycles.epoch_order(range(12), seed=5, fold=2, epoch=7).tolist() == [
        0, 7, 5, 8, 1, 4, 10, 9, 11, 2, 6, 3
    ]  # fmt: skip
    stratified = folds.stratified_folds([f"v{i}" for i in range(12)], [i % 2 for i in range(12)], 3, 5)
    assert [list(f.test) for f in stratified] == [
        ["v1", "v2", "v6", "v9"],
        ["v10", "v11", "v4", "v5"],
        ["v0", "v3", "v7", "v8"],
    ]
    assert _draws(heart.video_rng(5, 3)) == [971, 711, 285, 44, 963]
    assert echonet.split_assignment(12, 5) == [
        "TRAIN", "TRAIN", "TRAIN", "VAL", "TRAIN", "VAL", "TRAIN", "TRAIN", "TRAIN", "TEST", "TEST", "TRAIN"
    ]  # fmt: skip
    starts = start_indexes.draw_start_indexes({"a.avi": 200, "b.avi": 40}, 3, 36, 4, seed=5)
    assert {k: v.tolist() for k, v in starts.items()} == {"a.avi": [41, 29, 21], "b.avi": [3, 2, 1]}
    wide = start_indexes.draw_start_indexes({"a.avi": 200}, 3, 36, 4, seed=2**33 + 5, replace=True)
    assert wide["a.avi"].tolist() == [42, 5, 19]  # the seed enters modulo 2**32


def test_each_augmented_clip_draws_from_its_own_stream(monkeypatch):
    drawn = []
    monkeypatch.setattr(cycles, "random_affine", lambda clip, rng, spec: (drawn.append(_draws(rng)), clip)[1])
    batches = cycles.train_batches(
        np.zeros((6, 2, 4, 4), np.uint8),
        np.arange(6, dtype=np.float32),
        range(6),
        2,
        seed=5,
        fold=2,
        epoch=7,
        mean=[0.0],
        std=[1.0],
        augment=cycles.AffineSpec(10.0, 0.1, (0.8, 1.1)),
    )
    assert len(list(batches)) == 3
    assert drawn[:2] == [[433, 883, 149, 35, 676], [751, 206, 473, 191, 240]]
    assert drawn[-1] == [538, 387, 727, 299, 791]


def test_the_seed_table_loads_neither_jax_nor_tensorflow():
    done = run_python(
        "import json, sys, coreecho_jax.seeds\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'tensorflow'))))"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
