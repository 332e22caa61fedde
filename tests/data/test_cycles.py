"""The transfer clips: cycle -> fixed-length clip ([21]'s pipeline and the area one), RandomAffine,
normalisation, batches (numpy only)."""

import math

import chex
import numpy as np
import pytest
from PIL import Image

from coreecho_jax.data.transfer import cycles
from coreecho_jax.data.transfer.camus import CAMUS_MEAN, CAMUS_STD
from coreecho_jax.data.video.video_types import rgb_to_gray


def ref21_spec() -> cycles.CycleSpec:
    """configs/hmcqu.py's clips: [21]'s 12 frames of 224 px, crop 170."""
    return cycles.CycleSpec(
        frames=12, image_size=224, crop_fraction=170 / 224, spatial="ref21", time_sampling="centres"
    )


def direct_time_resample(x: np.ndarray, length: int) -> np.ndarray:
    """``interpolate(mode="linear" / "trilinear", align_corners=False)`` along axis 0, one output frame at
    a time in float64: frame ``i`` at ``(i + 0.5) F / length - 0.5``, clamped to ``[0, F - 1]``."""
    n = x.shape[0]
    out = []
    for i in range(length):
        src = max((i + 0.5) * n / length - 0.5, 0.0)
        i0 = min(math.floor(src), n - 1)
        i1 = min(i0 + 1, n - 1)
        w = src - i0
        out.append((1 - w) * x[i0].astype(np.float64) + w * x[i1].astype(np.float64))
    return np.stack(out)


def direct_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``Resize`` of a float tensor ``[F, h, w]`` (bilinear, align_corners=False) in
    float64, the four taps of each output pixel at once (not one axis after the other)."""
    h, w = x.shape[1:]

    def taps(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, wy = taps(h)
    x0, x1, wx = taps(w)
    wy, wx = wy[:, None], wx[None, :]
    g = lambda ys, xs: x[:, ys[:, None], xs[None, :]].astype(np.float64)
    return (
        (1 - wy) * (1 - wx) * g(y0, x0)
        + (1 - wy) * wx * g(y0, x1)
        + wy * (1 - wx) * g(y1, x0)
        + wy * wx * g(y1, x1)
    )


def ref21_clip(
    bgr_frames: list[np.ndarray], size: int = 224, crop: int = 170, frames: int = 12
) -> np.ndarray:
    """[21]'s ``mi/a4c/cycle.py`` after the frames are read, written out step by step: PIL ``convert("L")``
    of the BGR array, ``resize((size, size))`` with PIL's default filter, / 255, ``CenterCrop(crop)``,
    ``Resize((size, size))``, the time resampling to ``frames``. Returns ``[frames, size, size]`` in 0..1."""
    grey = [np.array(Image.fromarray(f).convert("L").resize((size, size))) for f in bgr_frames]
    clip = np.stack(grey) / 255
    top = int(round((size - crop) / 2.0))
    clip = clip[:, top : top + crop, top : top + crop]
    return direct_time_resample(direct_bilinear(clip, size), frames)


def test_time_resampling_keeps_the_ends_and_interpolates_linearly():
    frames = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 3), np.uint8) * 10  # 0,10,..,40
    out = cycles.resample_time(frames, 9)  # positions 0, 0.5, 1, ..., 4
    np.testing.assert_array_equal(out[:, 0, 0], np.arange(9) * 5.0)
    out = cycles.resample_time(frames, 2)
    np.testing.assert_array_equal(out[:, 0, 0], [0.0, 40.0])
    with pytest.raises(cycles.CycleError, match="at least 2 frames"):
        cycles.resample_time(frames[:1], 4)


@pytest.mark.parametrize("n", [19, 12, 7, 1])
def test_centres_sampling_is_align_corners_false_linear_interpolation(n):
    rng = np.random.default_rng(n)
    frames = rng.integers(0, 256, (n, 3, 4), dtype=np.uint8)
    out = cycles.resample_time(frames, 12, "centres")
    assert out.dtype == np.float32 and out.shape == (12, 3, 4)
    np.testing.assert_allclose(out, direct_time_resample(frames, 12), atol=5e-4)  # float32 arithmetic
    if n == 19:  # the first output frame lies between frames 0 and 1, the last between 17 and 18
        np.testing.assert_allclose(out[0], frames[0] * (1 - 7 / 24) + frames[1] * (7 / 24), atol=5e-4)
        assert not np.array_equal(out[-1], frames[-1].astype(np.float32))
    if n == 12:  # the same count: the frames themselves
        np.testing.assert_array_equal(out, frames.astype(np.float32))


def test_ref21_pipeline_follows_the_reference_step_by_step():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (7, 30, 44, 3), dtype=np.uint8)
    clip = cycles.cycle_to_clip(rgb, ref21_spec())
    assert clip.dtype == np.float32 and clip.shape == (12, 224, 224)
    expected = ref21_clip([f[..., ::-1] for f in rgb])  # what OpenCV hands [21]: BGR
    np.testing.assert_allclose(clip / 255, expected, atol=5e-6)  # float32 arithmetic
    # [21]'s grey weighs the channels swapped: a blue pixel is 0.299 * 255 in its grey, not 0.114 * 255
    blue = np.zeros((1, 8, 8, 3), np.uint8)
    blue[..., 2] = 255
    assert cycles.pil_grey_resize(blue[0], 8)[0, 0] == 76 and rgb_to_gray(blue)[0, 0, 0] == 29
    # a grey video gives the same clip from its grey frames
    grey = rgb[..., 1]
    np.testing.assert_array_equal(
        cycles.cycle_to_clip(np.repeat(grey[..., None], 3, -1), ref21_spec()),
        cycles.cycle_to_clip(grey, ref21_spec()),
    )
    # the crop offsets are torchvision's (round half to even), not floor division
    x = np.arange(64 * 64, dtype=np.float32).reshape(1, 64, 64)
    np.testing.assert_array_equal(cycles.torchvision_centre_crop(x, 49 / 64), x[:, 8:57, 8:57])
    np.testing.assert_array_equal(cycles.centre_crop(x, 49 / 64), x[:, 7:56, 7:56])


def test_the_area_pipeline_takes_rgb_as_its_luma():
    rgb = np.random.default_rng(5).integers(0, 256, (6, 30, 40, 3), dtype=np.uint8)
    spec = cycles.CycleSpec(frames=4, image_size=16, crop_fraction=0.8)
    np.testing.assert_array_equal(
        cycles.cycle_to_clip(rgb, spec), cycles.cycle_to_clip(rgb_to_gray(rgb), spec)
    )
    with pytest.raises(cycles.CycleError, match="data.spatial must be one of"):
        cycles.CycleSpec(spatial="pil")
    with pytest.raises(cycles.CycleError, match="data.time_sampling must be one of"):
        cycles.CycleSpec(time_sampling="middle")


def test_cycle_to_clip_crops_the_centre_resizes_and_resamples():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (13, 60, 80), dtype=np.uint8)
    frames[:, 30, 40] = 255
    clip = cycles.cycle_to_clip(frames, cycles.CycleSpec(frames=6, image_size=20, crop_fraction=0.5))
    chex.assert_shape(clip, (6, 20, 20))
    assert clip.dtype == np.uint8
    cropped = cycles.centre_crop(frames, 0.5)
    np.testing.assert_array_equal(cropped, frames[:, 15:45, 20:60])
    with pytest.raises(cycles.CycleError, match=r"grey frames \[F, H, W\]"):
        cycles.cycle_to_clip(frames[..., None], cycles.CycleSpec())
    with pytest.raises(cycles.CycleError, match="even"):
        cycles.CycleSpec(frames=7)


def test_the_identity_affine_changes_nothing_and_a_translation_moves_whole_pixels():
    rng = np.random.default_rng(1)
    clip = rng.integers(1, 256, (4, 16, 16), dtype=np.uint8)
    same = cycles.random_affine(clip, np.random.default_rng(0), cycles.AffineSpec(0.0, 0.0, (1.0, 1.0)))
    np.testing.assert_array_equal(same, clip)
    # translation only: every frame moves by the same whole-pixel (tx, ty); uncovered pixels are 0
    moved = cycles.random_affine(clip, np.random.default_rng(3), cycles.AffineSpec(0.0, 0.25, (1.0, 1.0)))
    m = cycles.affine_matrix(np.random.default_rng(3), cycles.AffineSpec(0.0, 0.25, (1.0, 1.0)), 16, 16)
    tx, ty = int(m[0, 2]), int(m[1, 2])
    assert (tx, ty) != (0, 0) and m[0, 2] == tx and m[1, 2] == ty
    ys, xs = slice(max(ty, 0), 16 + min(ty, 0)), slice(max(tx, 0), 16 + min(tx, 0))
    src_y, src_x = slice(max(-ty, 0), 16 - max(ty, 0)), slice(max(-tx, 0), 16 - max(tx, 0))
    np.testing.assert_array_equal(moved[:, ys, xs], clip[:, src_y, src_x])
    assert (moved == 0).sum() == 4 * (16 * 16 - (16 - abs(tx)) * (16 - abs(ty)))


def test_affine_draws_follow_torchvision_random_affine():
    spec = cycles.AffineSpec()  # RandomAffine(10, translate=(0.1, 0.1), scale=(0.8, 1.1))
    rng = np.random.default_rng(0)
    angles, scales, shifts = [], [], []
    for _ in range(2000):
        m = cycles.affine_matrix(rng, spec, 112, 112)
        a = m[:, :2]
        scale = float(np.sqrt(np.linalg.det(a)))
        scales.append(scale)
        angles.append(np.degrees(np.arctan2(-a[0, 1], a[0, 0])))
        # the matrix maps the centre c to c + t: the translation part is whole pixels within 0.1 W
        c = np.array([55.5, 55.5])
        shifts.append(a @ c + m[:, 2] - c)
    angles, scales, shifts = np.array(angles), np.array(scales), np.array(shifts)
    assert -10 <= angles.min() < -9 and 9 < angles.max() <= 10
    assert 0.8 <= scales.min() < 0.81 and 1.09 < scales.max() <= 1.1
    np.testing.assert_allclose(shifts, np.round(shifts), atol=1e-6)
    assert np.abs(shifts).max() <= 11.2 and np.abs(shifts).max() >= 10.5


def test_normalise_tiles_grey_to_three_channels():
    clip = np.array([[[0, 255]]], np.uint8)  # [1, 1, 2]
    out = cycles.normalise(clip, [CAMUS_MEAN] * 3, [CAMUS_STD] * 3)
    chex.assert_shape(out, (1, 1, 2, 3))
    np.testing.assert_allclose(out[0, 0, 1], (255 - CAMUS_MEAN) / CAMUS_STD, rtol=1e-6)
    assert np.all(out[..., 0] == out[..., 2])


def _set(n=10, t=4, s=8):
    clips = np.random.default_rng(0).integers(0, 256, (n, t, s, s), dtype=np.uint8)
    return clips, np.arange(n, dtype=np.float32) * 10


def test_train_batches_are_a_function_of_seed_fold_and_epoch_and_of_nothing_else():
    clips, labels = _set()
    kw = dict(seed=0, fold=1, mean=[0.0], std=[1.0], augment=cycles.AffineSpec())
    rows = np.arange(2, 10)
    a = list(cycles.train_batches(clips, labels, rows, 4, epoch=0, **kw))
    b = list(cycles.train_batches(clips, labels, rows, 4, epoch=0, **kw))
    c = list(cycles.train_batches(clips, labels, rows, 4, epoch=1, **kw))
    assert len(a) == 2  # 8 rows, full batches of 4
    for x, y in zip(a, b):
        chex.assert_trees_all_equal(x, y)
    assert sorted(np.concatenate([x["label"] for x in a])) == sorted(labels[rows])
    assert not all(np.array_equal(x["label"], y["label"]) for x, y in zip(a, c))
    # two processes see exactly the halves of the one-process batches, augmentation included
    halves = [
        list(cycles.train_batches(clips, labels, rows, 4, epoch=0, process_index=p, process_count=2, **kw))
        for p in (0, 1)
    ]
    for whole, p0, p1 in zip(a, *halves):
        np.testing.assert_array_equal(np.concatenate([p0["video"], p1["video"]]), whole["video"])
        np.testing.assert_array_equal(np.concatenate([p0["label"], p1["label"]]), whole["label"])
    chex.assert_shape(a[0]["video"], (4, 4, 8, 8, 3))


def test_eval_batches_cover_each_row_once_and_mask_the_padding():
    clips, labels = _set(7)
    names = [f"p{i}" for i in range(7)]
    rows = np.array([6, 0, 3, 5, 1])
    out = list(cycles.eval_batches(clips, labels, names, rows, 4, mean=[0.0], std=[1.0]))
    assert len(out) == 2
    chex.assert_shape(out[0]["video"], (4, 1, 4, 8, 8, 3))
    seen = [n.decode() for b in out for n, m in zip(b["filename"], b["mask"]) if m]
    assert seen == ["p6", "p0", "p3", "p5", "p1"]
    assert out[1]["mask"].tolist() == [True, False, False, False]
    np.testing.assert_array_equal(out[0]["video"][1, 0, ..., 0], clips[0].astype(np.float32))
    parts = [
        list(
            cycles.eval_batches(
                clips, labels, names, rows, 4, mean=[0.0], std=[1.0], process_index=p, process_count=2
            )
        )
        for p in (0, 1)
    ]
    seen2 = sorted(n.decode() for part in parts for b in part for n, m in zip(b["filename"], b["mask"]) if m)
    assert seen2 == sorted(seen)
