"""Tests for the tf.data clip pipelines (coreecho_jax.data.echonet.pipeline)."""

import os
import subprocess
import sys

import chex
import numpy as np
import pytest
import tensorflow as tf

from coreecho_jax.data import clips
from coreecho_jax.data.clips import ClipSpec
from coreecho_jax.data.echonet import echonet_tfds as et
from coreecho_jax.data.echonet import pipeline as pl
from coreecho_jax.data.echonet import reader
from coreecho_jax.data.echonet import start_indexes as si
from coreecho_jax.data.video.video_io import read_video
from tests.data.test_echonet import write_layout
from tests.paths import REPO

# train: short (90, 143), exactly 144, long (200); val: 5 videos for the eval padding test; test: 2.
# RGB videos whose three channels differ, stored with the default channels=3.
NUM_FRAMES = (90, 143, 144, 200, 100, 150, 160, 170, 180, 120, 210)
SPLITS = ["TRAIN"] * 4 + ["VAL"] * 5 + ["TEST"] * 2


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    root = write_layout(tmp / "echo", num_frames=NUM_FRAMES, splits=SPLITS, colour=True)
    builder = et.prepare_echonet(root, tmp / "tfds")
    videos = {p.stem: read_video(p, color=True).frames for p in sorted((root / "Videos").glob("*.avi"))}
    assert all(v.shape[-1] == 3 and (v[..., 0] != v[..., 1]).any() for v in videos.values())
    return builder, videos


def _text(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def _batches(ds):
    return list(pl.as_numpy(ds))


def test_tf_sampling_formulas_equal_numpy():
    rng = np.random.default_rng(0)
    u = np.concatenate([rng.random(2000), [0.0, np.nextafter(1.0, 0.0), 0.5, 0.25, 0.999999]])
    u32 = np.concatenate([rng.random(500).astype(np.float32), [np.nextafter(np.float32(1), np.float32(0))]])
    for uu in (u, u32):
        for num_frames in (1, 90, 141, 143, 144, 145, 200, 1000):
            got = pl.tf_start_from_uniform(tf.constant(uu), tf.constant(num_frames), ClipSpec()).numpy()
            np.testing.assert_array_equal(got, clips.start_from_uniform(uu, num_frames, 36, 4))
            got16 = pl.tf_start_from_uniform(
                tf.constant(uu), tf.constant(num_frames), ClipSpec(frames=16)
            ).numpy()
            np.testing.assert_array_equal(got16, clips.start_from_uniform(uu, num_frames, 16, 4))
        for pad in (0, 6, 3):
            np.testing.assert_array_equal(
                pl.tf_offset_from_uniform(tf.constant(uu), pad).numpy(), clips.offset_from_uniform(uu, pad)
            )


def test_train_clips_equal_numpy_sampler(prepared):
    builder, videos = prepared
    ds = pl.train_dataset(builder, "train", batch_size=2, views=2, seed=3, epoch=1, deterministic=True)
    batches = _batches(ds)
    assert len(batches) == 2  # 4 videos, batch 2
    seen = set()
    for b in batches:
        chex.assert_shape(b["video"], (2, 2, 36, 112, 112, 3))
        assert b["video"].dtype == np.float32
        chex.assert_shape(b["starts"], (2, 2))
        chex.assert_shape(b["offsets"], (2, 2, 2))
        for i, name in enumerate(map(_text, b["filename"])):
            seen.add(name)
            frames = videos[name]
            assert b["num_frames"][i] == len(frames)
            key = pl.video_key(tf.constant(name))
            for v in range(2):
                # Indices and offsets: the numpy sampler applied to the same stateless uniforms.
                u = pl.clip_uniforms(3, 1, key, v).numpy()
                assert b["starts"][i, v] == clips.start_from_uniform(u[0], len(frames))
                np.testing.assert_array_equal(b["offsets"][i, v], clips.offset_from_uniform(u[1:], 6))
                expected = clips.make_clip(frames, int(b["starts"][i, v]), offsets=tuple(b["offsets"][i, v]))
                np.testing.assert_allclose(b["video"][i, v], expected, rtol=0, atol=1e-6)
    assert seen == {f"0XVID{i:04d}" for i in range(4)}


def test_short_video_padded_black_and_ranges(prepared):
    builder, videos = prepared
    pad_value = -clips.MEAN / clips.STD
    for seed in range(3):
        for b in _batches(pl.train_dataset(builder, "train", batch_size=4, seed=seed, deterministic=True)):
            for i, name in enumerate(map(_text, b["filename"])):
                n = len(videos[name])
                assert b["starts"][i].max() < clips.num_start_positions(n)
                assert b["offsets"][i].min() >= 0 and b["offsets"][i].max() <= 12
                idx = clips.clip_indices(b["starts"][i, 0])
                black = idx >= n  # frames past the end of the video
                assert black.any() == (b["starts"][i, 0] + 140 >= n)
                if n == 90:
                    assert black.sum() == 36 - (90 - b["starts"][i, 0] + 3) // 4
                if black.any():
                    np.testing.assert_allclose(
                        b["video"][i, 0][black],
                        np.broadcast_to(pad_value, b["video"][i, 0][black].shape),
                        rtol=1e-6,
                    )


def test_translation_same_for_all_frames_and_views_independent(prepared):
    builder, _ = prepared
    starts, offsets = [], []
    for b in _batches(
        pl.train_dataset(
            builder, "train", spec=ClipSpec(frames=8), batch_size=4, num_epochs=6, deterministic=True
        )
    ):
        starts.append(b["starts"])
        offsets.append(b["offsets"])
    starts, offsets = np.concatenate(starts), np.concatenate(offsets)
    # Two views of a video are drawn independently: they differ somewhere.
    assert np.any(starts[:, 0] != starts[:, 1]) and np.any(offsets[:, 0] != offsets[:, 1])
    assert len(np.unique(offsets)) > 5


def test_no_augmentation_and_single_view(prepared):
    builder, videos = prepared
    b = _batches(
        pl.train_dataset(
            builder, "train", spec=ClipSpec(augment=False), batch_size=2, views=1, deterministic=True
        )
    )[0]
    chex.assert_shape(b["video"], (2, 1, 36, 112, 112, 3))
    assert (b["offsets"] == 6).all()
    name = _text(b["filename"][0])
    np.testing.assert_allclose(
        b["video"][0, 0], clips.make_clip(videos[name], int(b["starts"][0, 0])), atol=1e-6
    )


def test_resize_and_uint8_output(prepared):
    builder, videos = prepared
    kw = dict(batch_size=2, seed=1, deterministic=True)
    small = ClipSpec(frames=16, image_size=64)
    bf = _batches(pl.train_dataset(builder, "train", spec=small, **kw))[0]
    bu = _batches(
        pl.train_dataset(builder, "train", spec=ClipSpec(frames=16, image_size=64, output="uint8"), **kw)
    )[0]
    bn = _batches(pl.train_dataset(builder, "train", spec=ClipSpec(frames=16, output="uint8"), **kw))[0]
    chex.assert_shape(bf["video"], (2, 2, 16, 64, 64, 3))
    chex.assert_shape(bu["video"], (2, 2, 16, 64, 64, 3))  # the three stored channels, un-normalised
    assert bu["video"].dtype == np.uint8
    np.testing.assert_array_equal(bf["starts"], bu["starts"])
    for i, name in enumerate(map(_text, bf["filename"])):
        for v in range(2):
            st, off = int(bf["starts"][i, v]), tuple(bf["offsets"][i, v])
            ref = clips.make_clip(videos[name], st, offsets=off, spec=small)
            np.testing.assert_allclose(bf["video"][i, v], ref, atol=1e-4)
            np.testing.assert_array_equal(
                bu["video"][i, v], clips.make_clip_uint8(videos[name], st, offsets=off, spec=small)
            )
            raw = clips.make_clip_uint8(videos[name], st, offsets=off, frames=16)
            np.testing.assert_array_equal(bn["video"][i, v], raw)
            # Normalising the uint8 output later gives the float output.
            np.testing.assert_allclose(
                clips.normalise(bn["video"][i, v]),
                clips.make_clip(videos[name], st, offsets=off, frames=16),
                atol=1e-6,
            )


def _fingerprint(batches):
    return [(tuple(map(_text, b["filename"])), b["starts"].tolist(), b["offsets"].tolist()) for b in batches]


def test_seeded_shuffle_is_reproducible_and_epochs_differ(prepared):
    builder, _ = prepared

    def run(seed, epoch, num_epochs=1, **kw):
        batches = _batches(
            pl.train_dataset(
                builder,
                "train",
                batch_size=2,
                seed=seed,
                epoch=epoch,
                num_epochs=num_epochs,
                spec=ClipSpec(frames=8),
                shuffle_buffer=16,
                **kw,
            )
        )
        by_epoch = {}
        for b in batches:
            assert len(set(b["epoch"].tolist())) == 1  # batches never straddle epochs
            by_epoch.setdefault(int(b["epoch"][0]), []).append(b)
        return [_fingerprint(by_epoch[e]) for e in sorted(by_epoch)]

    epochs = run(0, 0, num_epochs=6)
    assert len(epochs) == 6
    assert run(0, 0) == epochs[:1]  # same seed and epoch: same batches
    assert run(0, 2) == epochs[2:3]  # a run resumed at epoch 2 reproduces epoch 2
    assert run(1, 0) != epochs[:1]  # another seed
    assert all(epochs[i] != epochs[j] for i in range(6) for j in range(i))
    orders = {tuple(n for names, _, _ in e for n in names) for e in epochs}
    assert len(orders) > 1  # the order is re-shuffled across epochs
    # A video's clips depend on (seed, epoch, video), not on its position in the order.
    det = {n: (s, o) for names, s, o in run(0, 2, deterministic=True)[0] for n, s, o in zip(names, s, o)}
    shuf = {n: (s, o) for names, s, o in epochs[2] for n, s, o in zip(names, s, o)}
    assert det == shuf


def test_drop_remainder_and_too_small_split(prepared):
    builder, _ = prepared
    spec = ClipSpec(frames=8)
    assert len(_batches(pl.train_dataset(builder, "train", spec=spec, batch_size=3, deterministic=True))) == 1
    with pytest.raises(ValueError, match="fewer than one batch of 5"):
        pl.train_dataset(builder, "train", batch_size=5)


def test_eval_padding_mask_and_exact_clips(prepared):
    builder, videos = prepared
    nf = {f"{n}.avi": f for n, f in et.split_videos(builder, "val").items()}
    starts = si.draw_start_indexes(nf, k=3, seed=0)
    batches = _batches(pl.eval_dataset(builder, "val", starts, batch_size=4))
    assert len(batches) == 2
    np.testing.assert_array_equal(batches[0]["mask"], [True, True, True, True])
    np.testing.assert_array_equal(batches[1]["mask"], [True, False, False, False])
    names = []
    for b in batches:
        chex.assert_shape(b["video"], (4, 3, 36, 112, 112, 3))
        chex.assert_shape(b["starts"], (4, 3))
        for i in np.nonzero(b["mask"])[0]:
            name = _text(b["filename"][i])
            names.append(name)
            np.testing.assert_array_equal(b["starts"][i], starts[name + ".avi"])
            np.testing.assert_allclose(
                b["video"][i], clips.make_clips(videos[name], starts[name + ".avi"]), atol=1e-6
            )
    assert sorted(names) == sorted(n[:-4] for n in nf)
    assert list(map(_text, batches[1]["filename"][1:])) == ["", "", ""]
    assert not batches[1]["video"][1:].any()


def test_eval_start_errors(prepared):
    builder, _ = prepared
    nf = {f"{n}.avi": f for n, f in et.split_videos(builder, "val").items()}
    starts = si.draw_start_indexes(nf, k=3, seed=0)
    missing = dict(starts)
    del missing["0XVID0006.avi"]
    with pytest.raises(ValueError, match=r"no clip starts for 1 video\(s\).*0XVID0006"):
        pl.eval_dataset(builder, "val", missing, batch_size=4)
    bad = dict(starts)
    bad["0XVID0004.avi"] = np.array([0, 1, 4])  # 100 frames -> starts 0..3
    with pytest.raises(ValueError, match=r"0XVID0004.*\[4\] out of range"):
        pl.eval_dataset(builder, "val", bad, batch_size=4)


def test_eval_multi_process_same_batch_count(prepared):
    builder, _ = prepared
    nf = {f"{n}.avi": f for n, f in et.split_videos(builder, "val").items()}
    starts = si.draw_start_indexes(nf, k=1, seed=0)
    names, counts = [], []

    def val_batches(process_index: int, process_count: int) -> list:
        return _batches(
            pl.eval_dataset(
                builder,
                "val",
                starts,
                spec=ClipSpec(frames=8),
                batch_size=2,
                process_index=process_index,
                process_count=process_count,
            )
        )

    for p in range(2):
        bs = val_batches(p, 2)
        counts.append(len(bs))
        names += [_text(n) for b in bs for n, m in zip(b["filename"], b["mask"]) if m]
    assert counts == [2, 2]
    assert sorted(names) == sorted(n[:-4] for n in nf)
    # More processes than videos: every process still yields the same number of (masked) batches.
    for p in (0, 6):
        bs = val_batches(p, 7)
        assert len(bs) == 1 and bs[0]["mask"].sum() == (1 if p < 5 else 0)


def test_gpus_hidden_from_tf_once_when_tf_work_starts_not_at_import():
    # A fresh interpreter: importing the data modules must not touch TensorFlow's devices; the
    # first pipeline/preparation call hides the GPUs, once.
    code = """
import tensorflow as tf
calls = []
tf.config.set_visible_devices = lambda devices, kind=None: calls.append((list(devices), kind))
from coreecho_jax.data.echonet import echonet_tfds, pipeline, tf_runtime
assert calls == [], calls
tf_runtime.hide_gpus_from_tensorflow()
tf_runtime.hide_gpus_from_tensorflow()
assert calls == [([], "GPU")], calls
print("ok")
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_multi_epoch_dataset_equals_separate_epochs(prepared):
    builder, _ = prepared
    kw = dict(batch_size=2, spec=ClipSpec(frames=8), seed=5, shuffle_buffer=16)
    joined = _batches(pl.train_dataset(builder, "train", epoch=3, num_epochs=2, **kw))
    separate = _batches(pl.train_dataset(builder, "train", epoch=3, **kw)) + _batches(
        pl.train_dataset(builder, "train", epoch=4, **kw)
    )
    assert _fingerprint(joined) == _fingerprint(separate)
    assert [b["epoch"].tolist() for b in joined] == [[3, 3], [3, 3], [4, 4], [4, 4]]
    np.testing.assert_array_equal(joined[3]["video"], separate[3]["video"])
    assert pl.train_batches_per_epoch(builder, "train", 2) == 2
    assert pl.train_batches_per_epoch(builder, "train", 3) == 1


def test_png_and_raw_frame_formats_give_identical_batches(prepared, tmp_path):
    raw, videos = prepared
    builder = et.prepare_echonet(raw.info.metadata["source_root"], tmp_path / "tfds_png", frame_format="png")
    assert et.frame_format(raw) == "raw" and et.frame_format(builder) == "png"
    kw = dict(batch_size=4, seed=2, deterministic=True)
    a = _batches(pl.train_dataset(builder, "train", **kw))[0]
    b = _batches(pl.train_dataset(raw, "train", **kw))[0]
    order = [list(map(_text, a["filename"])).index(n) for n in map(_text, b["filename"])]
    np.testing.assert_array_equal(a["video"][order], b["video"])
    nf = {f"{n}.avi": f for n, f in et.split_videos(builder, "test").items()}
    starts = si.draw_start_indexes(nf, k=2, seed=0)
    for batch in _batches(pl.eval_dataset(builder, "test", starts, batch_size=2)):
        for i, name in enumerate(map(_text, batch["filename"])):
            np.testing.assert_allclose(
                batch["video"][i], clips.make_clips(videos[name], starts[name + ".avi"]), atol=1e-6
            )


def test_end_to_end_on_synthetic_echonet_set(tmp_path):
    from coreecho_jax.data import synthetic

    root = synthetic.write_echonet_dataset(
        tmp_path / "synthetic", n_videos=12, seed=3, min_frames=60, max_frames=160, progress=False
    )
    builder = et.prepare_echonet(root, tmp_path / "tfds")
    videos = {p.stem: read_video(p).frames for p in (root / "Videos").glob("*.avi")}
    train = et.split_videos(builder, "train")
    assert train and all(videos[n].shape[0] == f for n, f in train.items())
    b = _batches(pl.train_dataset(builder, "train", batch_size=2, seed=0))[0]
    labels = {r.filename: r for r in reader.read_echonet(root).records}
    for i, name in enumerate(map(_text, b["filename"])):
        assert b["ef"][i] == np.float32(labels[name].ef) and b["edv"][i] == np.float32(labels[name].edv)
        for v in range(2):
            ref = clips.make_clip(videos[name], int(b["starts"][i, v]), offsets=tuple(b["offsets"][i, v]))
            np.testing.assert_allclose(b["video"][i, v], ref, atol=1e-6)
    test = {f"{n}.avi": f for n, f in et.split_videos(builder, "test").items()}
    starts = si.draw_start_indexes(test, k=3, seed=0)
    seen = []
    for batch in _batches(pl.eval_dataset(builder, "test", starts, batch_size=4)):
        for i in np.nonzero(batch["mask"])[0]:
            name = _text(batch["filename"][i])
            seen.append(name)
            np.testing.assert_allclose(
                batch["video"][i], clips.make_clips(videos[name], starts[name + ".avi"]), atol=1e-6
            )
    assert sorted(seen) == sorted(n[:-4] for n in test)


def _official_rgb(frames: np.ndarray) -> np.ndarray:
    """The official input of uint8 RGB frames [..., 3]: (x - MEAN[c]) / STD[c] per channel, written out."""
    mean = np.array([0.12741163, 0.1279413, 0.12912785], np.float32) * np.float32(255)
    std = np.array([0.19557191, 0.19562256, 0.1965878], np.float32) * np.float32(255)
    return (frames.astype(np.float32) - mean) / std


def test_rgb_channels_reach_the_model_input_in_order(prepared):
    builder, videos = prepared
    b = _batches(
        pl.train_dataset(
            builder, "train", spec=ClipSpec(augment=False), batch_size=4, views=1, deterministic=True
        )
    )[0]
    for i, name in enumerate(map(_text, b["filename"])):
        frames = clips.pad_video(videos[name])[clips.clip_indices(int(b["starts"][i, 0]))]  # [T, H, W, 3]
        np.testing.assert_allclose(b["video"][i, 0], _official_rgb(frames), rtol=0, atol=1e-5)
    nf = {f"{n}.avi": f for n, f in et.split_videos(builder, "val").items()}
    starts = si.draw_start_indexes(nf, k=2, seed=4)
    for batch in _batches(pl.eval_dataset(builder, "val", starts, batch_size=4)):
        for i in np.nonzero(batch["mask"])[0]:
            name = _text(batch["filename"][i])
            frames = clips.pad_video(videos[name])[
                clips.clip_indices(starts[name + ".avi"])
            ]  # [K, T, H, W, 3]
            np.testing.assert_allclose(batch["video"][i], _official_rgb(frames), rtol=0, atol=1e-5)


def test_one_channel_dataset_feeds_luma_tiled(prepared, tmp_path):
    rgb, videos = prepared
    root = rgb.info.metadata["source_root"]
    gray = et.prepare_echonet(root, tmp_path / "tfds1", channels=1)
    with pytest.raises(et.EchoNetPreparationError, match=r"stores 3 channel\(s\).*ask for 1"):
        pl.train_dataset(rgb, "train", spec=ClipSpec(channels=1), batch_size=2)
    with pytest.raises(et.EchoNetPreparationError, match=r"stores 1 channel\(s\).*ask for 3"):
        pl.train_dataset(gray, "train", batch_size=2)
    one = ClipSpec(channels=1)
    b = _batches(pl.train_dataset(gray, "train", spec=one, batch_size=2, seed=3, deterministic=True))[0]
    chex.assert_shape(b["video"], (2, 2, 36, 112, 112, 3))
    for i, name in enumerate(map(_text, b["filename"])):
        for v in range(2):
            st, off = int(b["starts"][i, v]), tuple(b["offsets"][i, v])
            ref = clips.make_clip(videos[name], st, offsets=off, spec=one)  # luma of the RGB video, tiled
            np.testing.assert_allclose(b["video"][i, v], ref, atol=1e-6)
    raw = b["video"] * clips.STD + clips.MEAN  # back to 0..255: one value tiled over the channels
    np.testing.assert_allclose(raw[..., 0], raw[..., 2], atol=1e-3)


def _by_name(batches, key="video"):
    return {
        _text(n): b[key][i]
        for b in batches
        for i, n in enumerate(b["filename"])
        if b.get("mask", [1] * 99)[i]
    }


def test_grey_videos_stored_once_give_the_clips_of_the_rgb_store(tmp_path):
    # Grey videos and three whose channels differ (train 0XVID0001, val 0XVID0005, test 0XVID0010).
    root = write_layout(tmp_path / "echo", num_frames=NUM_FRAMES, splits=SPLITS, colour_videos=(1, 5, 10))
    rgb = et.prepare_echonet(root, tmp_path / "tfds", collapse_grey=False)
    once = et.prepare_echonet(root, tmp_path / "tfds")
    png = et.prepare_echonet(root, tmp_path / "tfds", frame_format="png")
    stored = {s: dict(zip(v["filename"], v["channels"])) for s, v in once.info.metadata["videos"].items()}
    assert stored["train"] == {"0XVID0000": 1, "0XVID0001": 3, "0XVID0002": 1, "0XVID0003": 1}
    assert stored["val"]["0XVID0005"] == 3 and stored["test"] == {"0XVID0009": 1, "0XVID0010": 3}
    starts = si.draw_start_indexes(
        {f"{n}.avi": f for n, f in et.split_videos(rgb, "val").items()}, k=2, seed=1
    )
    specs = (
        ClipSpec(),  # official
        ClipSpec(frames=16, image_size=64),  # the demo's clips: translate, then resize
        ClipSpec(frames=8, output="uint8"),
        ClipSpec(frames=8, image_size=48, output="uint8"),
    )
    for spec in specs:
        kw = dict(spec=spec, batch_size=2, seed=7, epoch=1)
        want = _batches(pl.train_dataset(rgb, "train", **kw))
        for store in (once, png) if spec == specs[1] else (once,):
            got = _batches(pl.train_dataset(store, "train", **kw))
            assert [list(b["filename"]) for b in got] == [list(b["filename"]) for b in want]
            for g, w in zip(got, want):
                assert g["video"].dtype == w["video"].dtype and g["video"].shape[-1] == 3
                np.testing.assert_array_equal(g["video"], w["video"])  # bit for bit, grey and colour
                np.testing.assert_array_equal(g["offsets"], w["offsets"])
        want = _by_name(_batches(pl.eval_dataset(rgb, "val", starts, spec=spec, batch_size=2)))
        got = _by_name(_batches(pl.eval_dataset(once, "val", starts, spec=spec, batch_size=2)))
        assert got.keys() == want.keys() and len(got) == 5
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def test_grey_store_equals_rgb_store_on_the_synthetic_set(tmp_path):
    from coreecho_jax.data import synthetic

    root = synthetic.write_echonet_dataset(
        tmp_path / "synthetic", n_videos=10, seed=0, min_frames=60, max_frames=120, progress=False
    )
    rgb = et.prepare_echonet(root, tmp_path / "tfds", collapse_grey=False)
    once = et.prepare_echonet(root, tmp_path / "tfds")
    assert set(once.info.metadata["videos"]["train"]["channels"]) == {1}  # synthetic echoes are grey
    spec = ClipSpec(frames=16, image_size=64)  # configs/demo.py
    kw = dict(spec=spec, batch_size=4, seed=10, epoch=3, shuffle_buffer=1024)
    for got, want in zip(
        _batches(pl.train_dataset(once, **kw)), _batches(pl.train_dataset(rgb, **kw)), strict=True
    ):
        assert list(got["filename"]) == list(want["filename"])
        np.testing.assert_array_equal(got["video"], want["video"])
