"""Tests for the Table 3 switches ``data.augment`` and ``data.independent_views`` (clips + pipeline)."""

import dataclasses

import chex
import numpy as np
import pytest
import tensorflow as tf

from configs import echonet as echonet_config
from coreecho_jax import config_check
from coreecho_jax.data import clips
from coreecho_jax.data.clips import ClipSpec
from coreecho_jax.data.echonet import echonet_tfds as et
from coreecho_jax.data.echonet import inputs
from coreecho_jax.data.echonet import pipeline as pl
from coreecho_jax.data.video.video_io import read_video
from coreecho_jax.train import workdir
from tests.data.test_echonet import write_layout

# Four train videos: short (90, 143: black end padding), exactly one span (144) and long (200).
NUM_FRAMES = (90, 143, 144, 200, 100, 120)
SPLITS = ["TRAIN"] * 4 + ["VAL", "TEST"]
SPEC = ClipSpec(frames=8, stride=4, image_size=32)  # 8-frame clips: many start positions per video
SEED, EPOCH = 5, 2


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("switches")
    root = write_layout(tmp / "echo", num_frames=NUM_FRAMES, splits=SPLITS, colour=True)
    builder = et.prepare_echonet(root, tmp / "tfds")
    videos = {p.stem: read_video(p, color=True).frames for p in sorted((root / "Videos").glob("*.avi"))}
    return builder, videos


def _train(builder, spec, **kw):
    ds = pl.train_dataset(
        builder, "train", spec=spec, batch_size=4, seed=SEED, epoch=EPOCH, deterministic=True, **kw
    )
    (batch,) = list(pl.as_numpy(ds))
    return batch


def _name(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def _uniforms(name, view):
    return pl.clip_uniforms(SEED, EPOCH, pl.video_key(tf.constant(name)), view).numpy()


def test_defaults_are_official():
    config = echonet_config.get_config()
    assert config.data.augment is True and config.data.independent_views is True
    assert ClipSpec.from_config(config.data) == ClipSpec(image_size=112)
    assert clips.OFFICIAL_SPEC.augment and clips.OFFICIAL_SPEC.independent_views
    # A saved config from before the switches existed reads as the official behaviour.
    old = {k: v for k, v in config.data.items() if k not in ("augment", "independent_views")}
    assert ClipSpec.from_config(old).augment and ClipSpec.from_config(old).independent_views
    # Both change results: a resume under another value is refused by the workdir guard.
    assert {"data.augment", "data.independent_views"}.isdisjoint(workdir.RESULT_NEUTRAL_FIELDS)
    assert ClipSpec.from_config({**config.data, "independent_views": False}).independent_views is False


def test_the_training_data_of_a_run_gets_the_switches_from_its_config(quick_config, tmp_path):
    quick_config.data.augment = False
    quick_config.data.independent_views = False
    bundle = inputs.DataBundle(config=quick_config, workdir=tmp_path, root=tmp_path, builder=None)
    assert not bundle.spec.augment and not bundle.spec.independent_views  # train_batches passes bundle.spec


def test_config_rules_reject_non_booleans():
    config = echonet_config.get_config()
    assert config_check.config_problems(config) == []
    with config.data.ignore_type():
        config.data.augment = "no"
    del config.data["independent_views"]
    problems = config_check.config_problems(config)
    assert "data.augment = 'no': must be True or False" in problems
    assert any(p.startswith("data.independent_views: missing") for p in problems)
    with pytest.raises(clips.ClipError, match="augment must be True or False"):
        ClipSpec(augment=1)


def test_independent_views_default_draws_each_view(prepared):
    builder, videos = prepared
    b = _train(builder, SPEC)
    for i, name in enumerate(map(_name, b["filename"])):
        n = len(videos[name])
        for v in range(2):
            u = _uniforms(name, v)
            assert b["starts"][i, v] == clips.start_from_uniform(u[0], n, 8, 4)
            np.testing.assert_array_equal(b["offsets"][i, v], clips.offset_from_uniform(u[1:], 6))
    assert (b["starts"][:, 0] != b["starts"][:, 1]).any()  # the old and default behaviour


def test_shared_start_views_differ_only_by_translation(prepared):
    builder, videos = prepared
    spec = dataclasses.replace(SPEC, independent_views=False)
    b = _train(builder, spec)
    chex.assert_shape(b["video"], (4, 2, 8, 32, 32, 3))
    default = _train(builder, SPEC)
    for i, name in enumerate(map(_name, b["filename"])):
        frames = videos[name]
        u0 = _uniforms(name, 0)
        # Exact indices: both views take view 0's start; view 0 is the clip of the default mode.
        start = int(clips.start_from_uniform(u0[0], len(frames), 8, 4))
        np.testing.assert_array_equal(b["starts"][i], [start, start])
        np.testing.assert_array_equal(b["starts"][i, 0], default["starts"][i, 0])
        np.testing.assert_array_equal(b["video"][i, 0], default["video"][i, 0])
        for v in range(2):
            np.testing.assert_array_equal(
                b["offsets"][i, v], clips.offset_from_uniform(_uniforms(name, v)[1:], 6)
            )
            expected = clips.make_clip(frames, start, offsets=tuple(b["offsets"][i, v]), spec=spec)
            np.testing.assert_allclose(b["video"][i, v], expected, rtol=0, atol=1e-5)
    # Independent translations: the two views of some video are different crops of the same frames.
    moved = (b["offsets"][:, 0] != b["offsets"][:, 1]).any(axis=-1)
    assert moved.any()
    assert all(not np.array_equal(b["video"][i, 0], b["video"][i, 1]) for i in np.flatnonzero(moved))


def test_no_augmentation_is_the_centre_crop(prepared):
    builder, videos = prepared
    spec = dataclasses.replace(SPEC, augment=False)
    b = _train(builder, spec)
    assert (b["offsets"] == 6).all()  # offset pad = no translation
    for i, name in enumerate(map(_name, b["filename"])):
        for v in range(2):
            expected = clips.make_clip(videos[name], int(b["starts"][i, v]), spec=spec)  # offsets=None
            np.testing.assert_allclose(b["video"][i, v], expected, rtol=0, atol=1e-5)


def test_no_augmentation_and_shared_start_gives_identical_views(prepared):
    builder, _ = prepared
    spec = dataclasses.replace(SPEC, augment=False, independent_views=False)
    b = _train(builder, spec)
    np.testing.assert_array_equal(b["starts"][:, 0], b["starts"][:, 1])
    np.testing.assert_array_equal(b["video"][:, 0], b["video"][:, 1])
