"""tf.data clip pipelines over the prepared EchoNet-Dynamic TFDS dataset (CPU only).

Training (:func:`train_dataset`), one or more epochs per call::

    {'video': float32 [B, V, T, S, S, 3], 'ef', 'edv', 'esv': float32 [B], 'filename': string [B],
     'starts': int64 [B, V], 'offsets': int64 [B, V, 2], 'num_frames', 'epoch': int32 [B]}

V clips per video (2 for stage 1, 1 for stage 2), each with its own start and translation
(official); ``spec.independent_views=False`` gives all views of a video the start of view 0 (one
clip seen V times, translations still per view) and ``spec.augment=False`` turns the translation
off (the paper's Table 3 ablations). Evaluation (:func:`eval_dataset`) at fixed starts, no
augmentation, every video once::

    {'video': float32 [B, K, T, S, S, 3], 'ef', 'edv', 'esv', 'filename', 'starts': int64 [B, K],
     'num_frames', 'mask': bool [B]}

with the last batch padded to ``B`` (``mask`` False on padding). ``filename`` has no extension.
The clip settings are one :class:`clips.ClipSpec`. The model always gets three channels normalised
per channel with the official constants: the stored RGB channels (``channels=3``, official; a grey
video stored with one channel is tiled back to three first, which gives the same clip bit for bit),
or the stored luma tiled (``channels=1``). With ``spec.output='uint8'`` the video is the un-normalised
uint8 ``[..., S, S, C]`` (C = stored channels) instead; normalise it later (e.g. on device) with
``clips.normalise(x, xp=jnp)``.

The sampling formulas are those of :mod:`coreecho_jax.data.clips` (tests prove equality):
``start = floor(u0 * n_starts)``, ``offset = floor(u * (2 * pad + 1))``, black end padding to
``frames * stride`` frames, translation on the uint8 clip, resize (only if ``image_size`` differs
from the frame size), normalisation last. Only the frames a clip uses are decoded.

Randomness and reproducibility: the uniforms of a clip are ``tf.random.stateless_uniform`` with a
seed folded from ``(seed, epoch, fingerprint(filename), view)``, so a video's clips depend only on
those, not on order or parallelism. The epoch order is a stateless function of ``(seed, epoch)``:
the TFRecord shards are permuted, up to 16 are interleaved, and each run of ``shuffle_buffer``
consecutive videos is permuted. Epoch ``e`` of a resumed run therefore equals epoch ``e`` of an
uninterrupted one, and epochs differ. ``deterministic=True`` turns shuffling off (storage order;
for tests). Deviation from the official ``DataLoader(shuffle=True)``: the order is a full uniform
permutation only when the epoch fits in one window (``shuffle_buffer`` >= videos per process);
beyond that it is a shard shuffle plus windowed permutations.

The constructors hide the GPUs from TensorFlow (:mod:`coreecho_jax.data.echonet.tf_runtime`) before their
first TF operation; importing this module changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import cv2
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from coreecho_jax import seeds
from coreecho_jax.data import clips
from coreecho_jax.data.clips import OFFICIAL_SPEC, ClipSpec
from coreecho_jax.data.echonet import echonet_tfds, tf_runtime
from coreecho_jax.data.echonet.start_indexes import validate_start_indexes
from coreecho_jax.data.echonet_layout import avi_name

AUTOTUNE = tf.data.AUTOTUNE
_SEED_SALT = seeds.PIPELINE  # "core"


# ------------------------------------------------------------------------------- sampling (TF)


def tf_start_from_uniform(u: tf.Tensor, num_frames: tf.Tensor, spec: ClipSpec) -> tf.Tensor:
    """TF twin of :func:`clips.start_from_uniform` for clips of ``spec.frames`` at ``spec.stride``:
    ``min(floor(u * n), n - 1)`` in float64, int64 out."""
    num_frames = tf.cast(num_frames, tf.int64)
    n = tf.maximum(num_frames, spec.span) - (spec.frames - 1) * spec.stride
    start = tf.cast(tf.floor(tf.cast(u, tf.float64) * tf.cast(n, tf.float64)), tf.int64)
    return tf.minimum(start, n - 1)


def tf_offset_from_uniform(u: tf.Tensor, pad: int) -> tf.Tensor:
    """TF twin of :func:`clips.offset_from_uniform`: ``min(floor(u * (2 pad + 1)), 2 pad)``, int64."""
    off = tf.cast(tf.floor(tf.cast(u, tf.float64) * float(2 * pad + 1)), tf.int64)
    return tf.minimum(off, 2 * pad)


def video_key(filename: tf.Tensor) -> tf.Tensor:
    """Stable int64 fingerprint of a file name (FarmHash), the per-video part of the random seed."""
    return tf.strings.to_hash_bucket_fast(filename, 2**62)


def clip_uniforms(seed: int, epoch: tf.Tensor | int, key: tf.Tensor, view: int) -> tf.Tensor:
    """float64 ``[3]`` uniforms ``(u_start, u_dy, u_dx)`` of one clip, stateless in (seed, epoch, key, view)."""
    s = tf.constant([int(seed), _SEED_SALT], tf.int64)
    s = tf.random.experimental.stateless_fold_in(s, tf.cast(epoch, tf.int64))
    s = tf.random.experimental.stateless_fold_in(s, tf.cast(key, tf.int64))
    s = tf.random.experimental.stateless_fold_in(s, tf.constant(view, tf.int64))
    return tf.random.stateless_uniform([3], seed=s, dtype=tf.float64)


# ------------------------------------------------------------------------------- decoding (TF)


def _black_frame(height: int, width: int, channels: int, frame_format: str) -> bytes:
    """One stored black frame: ``H * W * C`` zero bytes, or a PNG (grey; decode_png widens it to C)."""
    if frame_format == "raw":
        return bytes(height * width * channels)
    ok, buf = cv2.imencode(".png", np.zeros((height, width), np.uint8))
    assert ok
    return buf.tobytes()


class _ClipMaker:
    """Gathers encoded frames of clips and turns them into model input (the TF side of clips.py).

    In an RGB dataset that stores grey videos once (:func:`echonet_tfds.grey_stored_once`), a video's
    own ``channels`` (1 or 3) picks the byte layout; a grey video's clips are cut, translated and
    resized on its one channel and become three channels before batching (normalised per video for
    float output, tiled for uint8), so every clip of a batch has three channels and equals, bit for
    bit, the clip of the video stored with three (tests prove it).
    """

    def __init__(self, builder: Any, spec: ClipSpec):
        stored = echonet_tfds.channels(builder)
        if stored != spec.channels:
            raise echonet_tfds.EchoNetPreparationError(
                f"{builder.data_dir} stores {stored} channel(s) per frame but the clips ask for "
                f"{spec.channels} (data.channels); prepare the dataset with channels={spec.channels}"
            )
        self.height, self.width = echonet_tfds.frame_size(builder)
        self.channels = stored
        self.mixed = echonet_tfds.grey_stored_once(builder)
        self.frame_format = echonet_tfds.frame_format(builder)
        self.spec = spec
        size = spec.image_size
        self.resize = size is not None and (size != self.height or size != self.width)
        self.out_hw = (size, size) if self.resize else (self.height, self.width)
        if self.resize:
            self.ry = tf.constant(clips.resize_matrix(self.height, size))
            self.rx = tf.constant(clips.resize_matrix(self.width, size))
        self.black = {
            c: tf.constant(_black_frame(self.height, self.width, c, self.frame_format)) for c in (1, 3)
        }
        self.mean = tf.constant(clips.MEAN)
        self.std = tf.constant(clips.STD)
        # lut[v, c] = normalised value of raw v in channel c, computed by clips.normalise: [256, 3].
        self.lut = tf.constant(clips.normalise(np.arange(256, dtype=np.uint8)[:, None]))

    def stored_channels(self, ex: Mapping[str, tf.Tensor]) -> tf.Tensor | None:
        """The example's stored channels (int32 scalar, 1 or 3) where they vary by video, else None."""
        return ex["channels"] if self.mixed else None

    def gather(
        self, encoded: tf.Tensor, num_frames: tf.Tensor, starts: tf.Tensor, stored: tf.Tensor | None = None
    ) -> tf.Tensor:
        """Encoded frames ``[K, T]`` of clips at ``starts [K]``; frames past the end become black frames.

        ``encoded`` is the stored ``frames`` feature: PNG strings ``[F]``, or one raw video string of
        ``stored`` channels per pixel (:meth:`stored_channels`; None = the dataset's channels).
        """
        frames, stride = self.spec.frames, self.spec.stride
        num = tf.cast(num_frames, tf.int64)
        idx = starts[:, None] + stride * tf.range(frames, dtype=tf.int64)[None, :]
        safe = tf.minimum(idx, num - 1)
        if stored is None:
            black = self.black[self.channels]
            channels = tf.constant(self.channels, tf.int64)
        else:
            black = tf.where(tf.equal(stored, 1), self.black[1], self.black[3])
            channels = tf.cast(stored, tf.int64)
        if self.frame_format == "raw":
            size = self.height * self.width * channels
            strings = tf.strings.substr(encoded, safe * size, tf.fill(tf.shape(safe), size))
        else:
            strings = tf.gather(encoded, safe)
        return tf.where(idx < num, strings, black)

    def _translate(self, x: tf.Tensor, dy: tf.Tensor, dx: tf.Tensor) -> tf.Tensor:
        """clips.translate on ``[T, H, W, C]``: one slice of the covered part + one black pad."""
        p, h, w = self.spec.pad, self.height, self.width
        y0, x0 = tf.maximum(dy - p, 0), tf.maximum(dx - p, 0)
        top, left = tf.maximum(p - dy, 0), tf.maximum(p - dx, 0)
        part = tf.slice(x, tf.stack([0, y0, x0, 0]), tf.stack([-1, h - top - y0, w - left - x0, -1]))
        return tf.pad(part, [[0, 0], tf.stack([top, y0]), tf.stack([left, x0]), [0, 0]])

    def decode(
        self, strings: tf.Tensor, offsets: tf.Tensor | None, k: int, stored: tf.Tensor | None = None
    ) -> tf.Tensor:
        """``[k, T]`` encoded frames (+ crop offsets ``[k, 2]``) -> un-normalised clips ``[k, T, S, S, C]``.

        uint8, except float32 (0..255 scale) when resizing for float output; :meth:`finish` normalises.
        ``stored`` as in :meth:`gather`: a one-channel video is decoded, translated and resized on its
        one channel, then tiled to ``C = 3`` (uint8 output) or normalised to float32 ``[..., 3]``
        here rather than in :meth:`finish` (float output).
        """
        if stored is None:
            return self._decode(strings, offsets, k, self.channels)
        if self.spec.output == "uint8":
            grey = lambda: self._tile(self._decode(strings, offsets, k, 1))
            colour = lambda: self._decode(strings, offsets, k, 3)
        else:  # normalised here, per video: the table for one channel (see finish)
            grey = lambda: self._normalise(self._decode(strings, offsets, k, 1), 1)
            colour = lambda: self._normalise(self._decode(strings, offsets, k, 3), 3)
        return tf.cond(tf.equal(stored, 1), grey, colour)

    @staticmethod
    def _tile(x: tf.Tensor) -> tf.Tensor:
        """``[..., 1]`` -> ``[..., 3]``: the one stored channel as R, G and B."""
        return tf.concat([x, x, x], axis=-1)

    def _decode(self, strings: tf.Tensor, offsets: tf.Tensor | None, k: int, c: int) -> tf.Tensor:
        """:meth:`decode` for videos stored with ``c`` channels: ``[k, T, S, S, c]``."""
        t, h, w = self.spec.frames, self.height, self.width
        out = []
        for i in range(k):
            if self.frame_format == "raw":
                x = tf.io.decode_raw(strings[i], tf.uint8, fixed_length=h * w * c)
                x = tf.reshape(x, [t, h, w, c])
            else:
                x = tf.map_fn(
                    lambda s: tf.io.decode_png(s, channels=c),
                    strings[i],
                    fn_output_signature=tf.TensorSpec([None, None, c], tf.uint8),
                )
                x = tf.ensure_shape(x, [t, h, w, c])
            if offsets is not None and self.spec.pad > 0:
                x = self._translate(x, offsets[i, 0], offsets[i, 1])
            out.append(x)
        x = tf.stack(out)
        if self.resize:
            x = tf.einsum("yh,kthwc->ktywc", self.ry, tf.cast(x, tf.float32))
            x = tf.einsum("xw,ktywc->ktyxc", self.rx, x)
            if self.spec.output == "uint8":
                x = tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)
        return tf.ensure_shape(x, [k, t, *self.out_hw, c])

    def finish(self, x: tf.Tensor) -> tf.Tensor:
        """Normalises a batch of decoded clips ``[..., C]`` -> float32 ``[..., 3]`` (or keeps uint8).

        Clips of a dataset with per-video channels were normalised in :meth:`decode` already.
        """
        if self.spec.output == "uint8" or self.mixed:
            return x
        return self._normalise(x, self.channels)

    def _normalise(self, x: tf.Tensor, c: int) -> tf.Tensor:
        """Clips ``[..., c]`` (uint8, or float32 0..255 after a resize) -> float32 ``[..., 3]``.

        One uint8 channel goes through the 256-entry table of ``clips.normalise`` (a row of three
        per value: tiling and normalising in one gather, 3x faster than broadcasting arithmetic);
        otherwise ``(x - MEAN) / STD`` in float32, the numpy sampler's own operations (2x faster
        than a per-channel table), broadcasting one channel to three. All are bit-identical to
        ``clips.normalise``.
        """
        if x.dtype == tf.uint8 and c == 1:
            return tf.gather(self.lut, tf.cast(x[..., 0], tf.int32))
        return (tf.cast(x, tf.float32) - self.mean) / self.std


def _labels(ex: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {
        "ef": ex["ef"],
        "edv": ex["edv"],
        "esv": ex["esv"],
        "filename": ex["filename"],
        "num_frames": ex["num_frames"],
    }


def _as_builder(source: Any) -> Any:
    if isinstance(source, tfds.core.DatasetBuilder):
        return source
    raise TypeError(
        f"expected a prepared EchoNet TFDS builder (prepare_echonet / load_echonet), got {source!r}"
    )


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True  # keep the seeded order even with parallel maps
    options.experimental_optimization.map_parallelization = True
    return options


# ------------------------------------------------------------------------------- datasets


def _epoch_seed(seed: int, epoch: tf.Tensor, salt: int) -> tf.Tensor:
    s = tf.constant([int(seed), _SEED_SALT + salt], tf.int64)
    return tf.random.experimental.stateless_fold_in(s, tf.cast(epoch, tf.int64))


def _window_shuffle(ds: tf.data.Dataset, window: int, seed: int, epoch: tf.Tensor) -> tf.data.Dataset:
    """Permutes each run of ``window`` consecutive elements with a stateless seed from (seed, epoch, run).

    A full uniform permutation of the epoch when ``window`` >= its length. Unlike
    ``Dataset.shuffle``, the permutation is a pure function of (seed, epoch), also inside ``flat_map``.
    """

    def permute(i, batch):
        s = tf.random.experimental.stateless_fold_in(_epoch_seed(seed, epoch, 2), i)
        order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(batch["ef"])[0]), seed=s)
        return tf.data.Dataset.from_tensor_slices({k: tf.gather(v, order) for k, v in batch.items()})

    # prefetch(1): the next window is read while this one is consumed (memory: two windows).
    return ds.batch(window).prefetch(1).enumerate().flat_map(permute)


def train_batches_per_epoch(source: Any, split: str, global_batch_size: int) -> int:
    """Full training batches per epoch, per process: ``videos // global_batch_size`` (``drop_last=True``).

    The one steps-per-epoch formula: :func:`train_dataset` yields this many batches of
    ``global_batch_size / process_count`` videos on every process, and the training loop steps it.
    """
    return len(echonet_tfds.split_videos(source, split)) // global_batch_size


def train_dataset(
    source: Any,
    split: str = "train",
    *,
    spec: ClipSpec = OFFICIAL_SPEC,
    batch_size: int,
    views: int = 2,
    seed: int = 0,
    epoch: int = 0,
    num_epochs: int | None = 1,
    deterministic: bool = False,
    shuffle_buffer: int = 1024,
    num_parallel_calls: int = AUTOTUNE,
    prefetch: int = 2,
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset:
    """Training epochs ``epoch, epoch + 1, ...`` of ``views`` random clips per video, as one stream.

    Each epoch is shuffled on its own and holds :func:`train_batches_per_epoch` full batches (the
    remainder of the epoch is dropped, as the official ``drop_last=True`` loader does); batches
    never straddle epochs, and epoch ``e`` is the same whether the stream starts at ``e`` or before.
    Batches carry ``'epoch'`` int32 ``[B]``.

    Args:
        source: prepared builder (:func:`echonet_tfds.prepare_echonet` / ``load_echonet``).
        split: ``train`` (official) or another split.
        spec: clip settings (frames, stride, translation pad, output size and dtype, channels); its
            ``channels`` must be what the dataset stores. ``spec.augment``: the official +-``spec.pad``
            px translation, or none (centre crop); views share a start when ``spec.independent_views``
            is False.
        batch_size: videos per batch (per process).
        views: clips per video (2 = stage 1 pair, 1 = stage 2).
        seed, epoch: reproducibility keys (see module doc); ``epoch`` is the first epoch.
        num_epochs: epochs in the stream (``None`` = endless).
        deterministic: no shuffling (file order) - for tests; draws still depend on (seed, epoch).
        shuffle_buffer: shuffle window in videos. Each video holds ``views * frames`` encoded
            frames (~5-8 KB each as PNG, ``H * W * C`` bytes raw: 12.5 KB grey, also a grey video
            of an RGB dataset, 37.6 KB colour) and up to two windows are in memory: 1024 videos x 72
            colour frames ~ 5.5 GB, a third of that for grey ones. An epoch no longer
            than the window is a full uniform permutation, but its first batch then waits until the
            whole epoch has been read.
        num_parallel_calls: parallelism of the decode map.
        prefetch: batches to prefetch.
        process_index, process_count: multi-host sharding of the videos.
    """
    tf_runtime.hide_gpus_from_tensorflow()
    builder = _as_builder(source)
    if batch_size < 1 or views < 1:
        raise clips.ClipError(f"batch_size and views must be >= 1, got {batch_size}, {views}")
    if num_epochs is not None and num_epochs < 1:
        raise clips.ClipError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    maker = _ClipMaker(builder, spec)
    pad = spec.pad
    steps = train_batches_per_epoch(builder, split, batch_size * process_count)
    if steps < 1:
        n_videos = len(echonet_tfds.split_videos(builder, split))
        raise clips.ClipError(
            f"split {split!r} has {n_videos} videos ({n_videos // process_count} per process): "
            f"fewer than one batch of {batch_size} with drop_remainder=True"
        )
    files = tf.constant(echonet_tfds.split_files(builder, split))
    features = builder.info.features
    decoders = {"frames": tfds.decode.SkipDecoding()}
    cycle = 1 if deterministic else min(16, int(files.shape[0]))

    def select(e, serialized):
        ex = features.deserialize_example(serialized, decoders=decoders)
        key = video_key(ex["filename"])
        u = tf.stack([clip_uniforms(seed, e, key, v) for v in range(views)])  # [V, 3]
        # Shared start: every view takes view 0's uniform, so view 0 is the same clip in both modes.
        u_start = u[:, 0] if spec.independent_views else tf.fill([views], u[0, 0])
        starts = tf_start_from_uniform(u_start, ex["num_frames"], spec)
        if spec.augment:
            offsets = tf_offset_from_uniform(u[:, 1:], pad)
        else:
            offsets = tf.fill([views, 2], tf.constant(pad, tf.int64))
        out = _labels(ex)
        stored = maker.stored_channels(ex)
        out.update(
            strings=maker.gather(ex["frames"], ex["num_frames"], starts, stored),
            starts=starts,
            offsets=offsets,
            epoch=tf.cast(e, tf.int32),
        )
        if stored is not None:
            out["stored_channels"] = stored
        return out

    def one_epoch(e):
        order = (
            files
            if deterministic
            else tf.random.experimental.stateless_shuffle(files, _epoch_seed(seed, e, 1))
        )
        ds = tf.data.Dataset.from_tensor_slices(order)
        if cycle > 1:
            ds = ds.interleave(
                lambda f: tf.data.TFRecordDataset(f, buffer_size=8 << 20),
                cycle_length=cycle,
                block_length=1,
                num_parallel_calls=cycle,
                deterministic=True,
            )
        else:
            ds = ds.flat_map(lambda f: tf.data.TFRecordDataset(f, buffer_size=8 << 20))
        if process_count > 1:
            ds = ds.shard(process_count, process_index)
        ds = ds.map(lambda r: select(e, r), num_parallel_calls=AUTOTUNE, deterministic=True)
        if not deterministic:
            ds = _window_shuffle(ds, shuffle_buffer, seed, e)
        return ds.take(steps * batch_size)

    def decode(ex):
        ex = dict(ex)
        ex["video"] = maker.decode(ex.pop("strings"), ex["offsets"], views, ex.pop("stored_channels", None))
        return ex

    last = 2**62 if num_epochs is None else epoch + num_epochs
    ds = tf.data.Dataset.range(epoch, last).flat_map(one_epoch)
    ds = ds.map(decode, num_parallel_calls=num_parallel_calls, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda b: {**b, "video": maker.finish(b["video"])}, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(prefetch).with_options(_options())


def eval_dataset(
    source: Any,
    split: str,
    starts: Mapping[str, Any],
    *,
    spec: ClipSpec = OFFICIAL_SPEC,
    batch_size: int,
    num_parallel_calls: int = AUTOTUNE,
    prefetch: int = 2,
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset:
    """Every video of ``split`` once, K clips at fixed ``starts``, no augmentation; last batch padded + masked.

    Args:
        source: prepared builder.
        split: ``val`` or ``test`` (any split works).
        starts: ``{'<name>.avi' (or name): int starts [K]}`` covering every video of the split
            (e.g. :func:`start_indexes.load_start_indexes` of the official pkl); the same K for all.
        spec: clip settings as in :func:`train_dataset` (``spec.pad`` is unused: no translation).
        batch_size: videos per batch.
        process_index, process_count: multi-host sharding; every process yields the same number of
            batches (extra batches are fully masked).

    Raises:
        StartIndexError / ClipError: a video of the split has no starts (named), a start is out of
            range, or K differs.
    """
    tf_runtime.hide_gpus_from_tensorflow()
    builder = _as_builder(source)
    maker = _ClipMaker(builder, spec)
    videos = echonet_tfds.split_videos(builder, split)
    checked = validate_start_indexes(
        starts, {avi_name(n): f for n, f in videos.items()}, spec, source=f"clip starts for split {split!r}"
    )
    names = list(videos)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(names), tf.range(len(names), dtype=tf.int64)),
        default_value=-1,
    )
    start_matrix = tf.constant(np.stack([checked[avi_name(n)] for n in names]))
    k = int(start_matrix.shape[1])
    per_process = math.ceil(len(names) / process_count)
    num_batches = math.ceil(per_process / batch_size)

    ds = echonet_tfds.split_dataset(builder, split, read_config=tfds.ReadConfig(try_autocache=False))
    if process_count > 1:
        ds = ds.shard(process_count, process_index)

    def make(ex):
        row = table.lookup(ex["filename"])
        tf.debugging.assert_non_negative(row, message="video missing from the start table")
        clip_starts = tf.gather(start_matrix, row)
        out = _labels(ex)
        out["starts"] = clip_starts
        stored = maker.stored_channels(ex)
        strings = maker.gather(ex["frames"], ex["num_frames"], clip_starts, stored)
        out["video"] = maker.decode(strings, None, k, stored)
        return out

    def pad_batch(batch):
        batch = {**batch, "video": maker.finish(batch["video"])}
        n = tf.shape(batch["ef"])[0]
        out = {}
        for key, value in batch.items():
            paddings = [[0, batch_size - n]] + [[0, 0]] * (len(value.shape) - 1)
            padded = tf.pad(value, paddings)
            out[key] = tf.ensure_shape(padded, [batch_size] + value.shape[1:].as_list())
        out["mask"] = tf.range(batch_size) < n
        return out

    ds = (
        ds.map(make, num_parallel_calls=num_parallel_calls)
        .batch(batch_size)
        .map(pad_batch, num_parallel_calls=AUTOTUNE)
    )
    if process_count > 1:  # same number of batches on every process: append fully masked blank batches
        blank = {
            key: tf.fill(ts.shape, "") if ts.dtype == tf.string else tf.zeros(ts.shape, ts.dtype)
            for key, ts in ds.element_spec.items()
        }
        ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat()).take(num_batches)
    return ds.prefetch(prefetch).with_options(_options())


def as_numpy(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    """Iterates a dataset as dicts of numpy arrays (strings as ``bytes`` object arrays)."""
    return iter(tfds.as_numpy(ds))
