"""Tests for the numpy clip sampler (coreecho_jax.data.clips)."""

import chex
import cv2
import numpy as np
import pytest

from coreecho_jax.data import clips


def _video(num_frames, size=112, channels=None):
    """uint8 video whose frame i has all pixels = i + 1 (so black padding is distinguishable)."""
    v = np.broadcast_to(
        (np.arange(num_frames) % 250 + 1).astype(np.uint8)[:, None, None], (num_frames, size, size)
    )
    v = np.ascontiguousarray(v)
    return v if channels is None else np.repeat(v[..., None], channels, axis=-1)


def test_constants_are_official():
    np.testing.assert_allclose(clips.MEAN, np.array([0.12741163, 0.1279413, 0.12912785]) * 255, rtol=1e-6)
    np.testing.assert_allclose(clips.STD, np.array([0.19557191, 0.19562256, 0.1965878]) * 255, rtol=1e-6)
    spec = clips.OFFICIAL_SPEC
    assert (spec.frames, spec.stride, spec.pad, spec.image_size, spec.output, spec.channels) == (
        36,
        4,
        6,
        112,
        "float32",
        3,
    )
    assert spec.span == 144


def test_clip_spec_checks_and_config():
    import ml_collections

    with pytest.raises(clips.ClipError, match="channels must be one of"):
        clips.ClipSpec(channels=2)
    with pytest.raises(clips.ClipError, match="output must be one of"):
        clips.ClipSpec(output="float16")
    with pytest.raises(clips.ClipError, match="frames >= 1"):
        clips.ClipSpec(frames=0)
    data = ml_collections.ConfigDict(dict(frames=16, stride=2, pad=3, image_size=64, channels=1))
    assert clips.ClipSpec.from_config(data) == clips.ClipSpec(16, 2, 3, 64, "float32", 1)
    del data["channels"]  # a config without the field gets the official three channels
    assert clips.ClipSpec.from_config(data, output="uint8") == clips.ClipSpec(16, 2, 3, 64, "uint8", 3)
    with pytest.raises(TypeError, match="either a ClipSpec or its fields"):
        clips.make_clips(_video(200), [0], clips.OFFICIAL_SPEC, frames=8)


@pytest.mark.parametrize(
    "num_frames,padded,positions",
    [(1, 144, 4), (100, 144, 4), (141, 144, 4), (143, 144, 4), (144, 144, 4), (145, 145, 5), (200, 200, 60)],
)
def test_padded_length_and_start_positions(num_frames, padded, positions):
    assert clips.padded_length(num_frames) == padded
    assert clips.num_start_positions(num_frames) == positions


def test_start_distribution_matches_official_choice():
    # Official: start = np.random.choice(F - 140) on the padded video.
    u = np.linspace(0.0, 1.0, 10001, endpoint=False)
    assert set(clips.start_from_uniform(u, 100).tolist()) == {0, 1, 2, 3}
    starts = clips.start_from_uniform(u, 200)
    assert starts.min() == 0 and starts.max() == 59 and len(set(starts.tolist())) == 60
    counts = np.bincount(starts)
    assert counts.max() - counts.min() <= 1  # uniform
    # Largest float below 1 still maps inside the range.
    assert clips.start_from_uniform(np.nextafter(1.0, 0.0), 200) == 59
    assert clips.start_from_uniform(np.float32(np.nextafter(np.float32(1), np.float32(0))), 145) == 4


def test_offsets_cover_0_to_12():
    u = np.linspace(0.0, 1.0, 1301, endpoint=False)
    offs = clips.offset_from_uniform(u, 6)
    assert offs.min() == 0 and offs.max() == 12 and len(set(offs.tolist())) == 13
    np.testing.assert_array_equal(
        clips.offset_from_uniform(u, 6), (13 * u).astype(int)
    )  # albumentations rule


def test_clip_indices():
    np.testing.assert_array_equal(clips.clip_indices(3), 3 + 4 * np.arange(36))
    np.testing.assert_array_equal(
        clips.clip_indices(np.array([0, 59])), np.stack([4 * np.arange(36), 59 + 4 * np.arange(36)])
    )


def test_short_video_padded_with_black_to_exactly_144():
    video = _video(100)
    padded = clips.pad_video(video)
    assert padded.shape == (144, 112, 112)
    np.testing.assert_array_equal(padded[:100], video)
    assert not padded[100:].any()
    assert clips.pad_video(_video(150)).shape[0] == 150
    # A clip at start 3: frames 3, 7, ..., 99 are real, 103..143 are black.
    clip = clips.gather_clip(video, 3)
    chex.assert_shape(clip, (36, 112, 112, 1))
    idx = 3 + 4 * np.arange(36)
    np.testing.assert_array_equal(clip[:, 0, 0, 0], np.where(idx < 100, idx + 1, 0))


def test_gather_long_video_exact_frames():
    video = _video(200)
    clip = clips.gather_clip(video, 59)
    np.testing.assert_array_equal(clip[:, 5, 7, 0], 59 + 4 * np.arange(36) + 1)
    with pytest.raises(ValueError, match=r"out of range.*0\.\.59"):
        clips.gather_clip(video, 60)


def test_translation_moves_pattern_with_black_fill():
    clip = np.zeros((3, 112, 112, 1), np.uint8)
    clip[:, 50, 60] = 200  # one bright pixel per frame
    clip[:, :, :, :] += 1  # non-black background so the fill is visible
    for dy, dx in [(0, 0), (12, 12), (6, 6), (2, 9)]:
        out = clips.translate(clip, dy, dx, pad=6)
        chex.assert_shape(out, clip.shape)
        # The pixel moves by (6 - dy, 6 - dx) in every frame.
        for t in range(3):
            ys, xs = np.nonzero(out[t, :, :, 0] == 201)
            assert (ys.tolist(), xs.tolist()) == ([50 + 6 - dy], [60 + 6 - dx])
        # Uncovered rows/columns are black, the rest is background.
        shift_y, shift_x = 6 - dy, 6 - dx
        black = out[0, :, :, 0] == 0
        expected_black = np.zeros((112, 112), bool)
        if shift_y > 0:
            expected_black[:shift_y] = True
        if shift_y < 0:
            expected_black[shift_y:] = True
        if shift_x > 0:
            expected_black[:, :shift_x] = True
        if shift_x < 0:
            expected_black[:, shift_x:] = True
        np.testing.assert_array_equal(black, expected_black)
    np.testing.assert_array_equal(clips.translate(clip, 6, 6), clip)
    with pytest.raises(ValueError, match="0..12"):
        clips.translate(clip, 13, 0)


def test_normalisation_values():
    out = clips.normalise(np.array([[0], [255]], np.uint8))
    chex.assert_shape(out, (2, 3))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [-0.6515, -0.6540, -0.6568], atol=1e-4)
    np.testing.assert_allclose(out[1], (255 - clips.MEAN) / clips.STD, rtol=1e-6)
    # RGB input keeps its channels.
    rgb = clips.normalise(np.array([[10, 20, 30]], np.uint8))
    np.testing.assert_allclose(rgb[0], (np.array([10, 20, 30]) - clips.MEAN) / clips.STD, rtol=1e-6)


def test_make_clip_normalises_last_so_padding_is_minus_065():
    video = _video(100)
    clip = clips.make_clip(video, 3, offsets=(0, 0))
    chex.assert_shape(clip, (36, 112, 112, 3))
    pad_value = -clips.MEAN / clips.STD
    # Translated border (top rows, left cols) and padded frames are the normalised black value.
    np.testing.assert_allclose(clip[0, :6, :, :], np.broadcast_to(pad_value, (6, 112, 3)), rtol=1e-6)
    np.testing.assert_allclose(clip[-1], np.broadcast_to(pad_value, (112, 112, 3)), rtol=1e-6)
    np.testing.assert_allclose(clip[0, 6, 6], (4 - clips.MEAN) / clips.STD, rtol=1e-6)


def test_resize_matrix_and_resized_clip():
    r = clips.resize_matrix(112, 64)
    chex.assert_shape(r, (64, 112))
    np.testing.assert_allclose(r.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(clips.resize_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    video = _video(150)
    clip = clips.make_clip(video, 2, image_size=64)
    chex.assert_shape(clip, (36, 64, 64, 3))
    # A constant frame stays constant after an area resize.
    np.testing.assert_allclose(clip[0], np.broadcast_to((3 - clips.MEAN) / clips.STD, (64, 64, 3)), rtol=1e-5)


def test_make_clips_for_prediction():
    video = _video(200)
    out = clips.make_clips(video, [0, 10, 59])
    chex.assert_shape(out, (3, 36, 112, 112, 3))
    np.testing.assert_allclose(
        out[1, :, 0, 0, 0], (10 + 4 * np.arange(36) + 1 - clips.MEAN[0]) / clips.STD[0], rtol=1e-6
    )
    # RGB and [F,H,W,1] inputs give the same clips for gray content.
    np.testing.assert_array_equal(clips.make_clips(_video(200, channels=3), [0, 10, 59]), out)
    np.testing.assert_array_equal(clips.make_clips(_video(200, channels=1), [0, 10, 59]), out)
    with pytest.raises(ValueError, match="out of range"):
        clips.make_clips(video, [60])
    with pytest.raises(ValueError, match="uint8"):
        clips.make_clips(video.astype(np.float32), [0])


def _colour_video(num_frames, size=112):
    """uint8 RGB video whose three channels differ: R = frame + 1, G = 2 * (frame + 1), B = 255 - frame."""
    t = np.arange(num_frames, dtype=np.int64)[:, None, None, None]
    rgb = np.concatenate([t + 1, 2 * (t + 1), 255 - t], axis=-1) % 256
    return np.ascontiguousarray(np.broadcast_to(rgb, (num_frames, size, size, 3)).astype(np.uint8))


def test_make_clips_keeps_rgb_channels_normalised_per_channel():
    video = _colour_video(200)
    out = clips.make_clips(video, [0, 10, 59])
    chex.assert_shape(out, (3, 36, 112, 112, 3))
    idx = 10 + 4 * np.arange(36)
    for c in range(3):
        expected = (video[idx, 0, 0, c].astype(np.float32) - clips.MEAN[c]) / clips.STD[c]
        np.testing.assert_allclose(out[1, :, 5, 7, c], expected, rtol=1e-6)
    # The channels really differ, so a luma or one-channel shortcut would not pass the check above.
    assert not np.allclose(out[..., 0], out[..., 1])
    # channels=1: OpenCV's luma of the RGB frames, tiled to three channels.
    luma = clips.make_clips(video, [10], channels=1)[0]
    gray = cv2.cvtColor(np.ascontiguousarray(video[idx, 0, 0][:, None]), cv2.COLOR_RGB2GRAY)[:, 0]
    np.testing.assert_allclose(luma[:, 5, 7], (gray[:, None] - clips.MEAN) / clips.STD, rtol=1e-6)
    # A grey [F, H, W] video with channels=3 is tiled: the same as its three equal channels.
    grey = _video(200)
    np.testing.assert_array_equal(
        clips.make_clips(grey, [4]), clips.make_clips(np.repeat(grey[..., None], 3, -1), [4])
    )
