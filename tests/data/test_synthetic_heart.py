"""Tests for the synthetic drawing (coreecho_jax.data.synthetic.heart, .quality): heart parameters, the
per-frame LV masks against the volumes, the half-cycle and hypokinetic-segment hooks, image degradation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from coreecho_jax.data import synthetic as syn
from coreecho_jax.errors import ConfigError

CFG = syn.DrawingConfig()


def _params(index: int, num_frames: int = 40, config: syn.DrawingConfig = CFG) -> syn.HeartParams:
    return syn.sample_heart_params(syn.video_rng(1, index), config, num_frames)


def _draw(params: syn.HeartParams, index: int = 0) -> syn.DrawnVideo:
    return syn.draw_video(params, syn.video_rng(100, index))


def _lv_coords(video: syn.DrawnVideo, mask: np.ndarray) -> np.ndarray:
    """LV coordinates (x_long from the apex, y_short; pixels) of a mask's pixels: float [2, N]."""
    apex = np.array(video.lv_to_image(0.0, 0.0))
    axes = np.stack([np.array(video.lv_to_image(*e)) - apex for e in ((1.0, 0.0), (0.0, 1.0))], axis=1)
    yy, xx = np.nonzero(mask)
    return np.linalg.solve(axes, np.stack([xx - apex[0], yy - apex[1]]))


def _x_long_map(video: syn.DrawnVideo) -> np.ndarray:
    """Every pixel's position along the LV long axis, float [H, W]."""
    size = video.params.size
    return _lv_coords(video, np.ones((size, size), bool))[0].reshape(size, size)


# ------------------------------------------------------------------------------- parameters


def test_sampled_params_and_their_validation():
    p = _params(0)
    assert p.num_frames == 40 and p.size == 112 and p.cm_per_px == CFG.cm_per_px
    assert CFG.edv_range_ml[0] <= p.edv_ml <= CFG.edv_range_ml[1]
    assert CFG.ef_range[0] <= p.target_ef <= CFG.ef_range[1] and 0 <= p.phase0 < 1
    # A 40-frame video at 50 fps holds one beat (ED, ES, next ED): the rate was raised if needed.
    assert p.period * (1 + p.systole_fraction) + 2 <= 40
    assert syn.sample_heart_params(syn.video_rng(1, 0), syn.DrawingConfig(size=224), 40).cm_per_px == 0.08
    with pytest.raises(ConfigError, match="unknown segments \\[8\\]"):
        dataclasses.replace(p, hypokinetic_segments=(8,))
    with pytest.raises(ConfigError, match="segment_motion"):
        dataclasses.replace(p, segment_motion=1.5)
    with pytest.raises(ConfigError, match="DrawingConfig.fps"):
        syn.DrawingConfig(fps=0)


# ------------------------------------------------------------------------------- LV masks


@pytest.mark.parametrize("index", range(3))
def test_masks_are_the_drawn_cavity_and_give_the_volumes(index):
    """Simpson's discs of the returned masks give the labelled (ellipsoid) volumes in every frame, and
    the mask is the dark region of the frame."""
    v = _draw(_params(index), index)
    assert v.lv_mask.shape == v.frames.shape and v.lv_mask.dtype == bool
    discs = syn.disc_volumes(v.lv_mask, _x_long_map(v), v.params.cm_per_px)
    np.testing.assert_allclose(discs, v.volumes, rtol=0.03)
    assert np.corrcoef(discs, v.volumes)[0, 1] > 0.999
    disc_ef = 100 * (discs[v.ed_frame] - discs[v.es_frame]) / discs[v.ed_frame]
    assert disc_ef == pytest.approx(v.ef, abs=1.5)
    for k in (v.ed_frame, v.es_frame):
        inside = v.frames[k][v.lv_mask[k]].mean()
        assert inside < 0.3 * v.frames[k][~v.lv_mask[k] & (v.frames[k] > 0)].mean()


# --------------------------------------------------------------------------------- hooks


def test_half_cycle_runs_from_ed_to_es():
    for index in range(3):
        p = _params(index, num_frames=20).half_cycle()
        v = _draw(p, index)
        assert v.ed_frame == 0 and v.volumes[0] == v.volumes.max()
        assert np.all(np.diff(v.volumes) <= 0)  # contracting all along
        assert v.volumes[v.es_frame] == v.volumes[-1] == v.volumes.min()
        assert v.ef == pytest.approx(p.target_ef, abs=1.0)


def test_hypokinetic_segment_moves_less_where_it_should():
    """Reducing a segment's motion leaves ED unchanged, enlarges the ES cavity only in that segment's
    region (its third of the long axis, its side of the LV) and lowers EF."""
    p = _params(0).half_cycle()
    normal = _draw(p)
    es = p.num_frames - 1
    # segment: (long-axis third as (lo, hi) fractions from the apex, side: -1 septal / +1 lateral)
    place = {1: ((2 / 3, 1.1), -1), 2: ((1 / 3, 2 / 3), -1), 3: ((0, 1 / 3), -1), 5: ((0, 1 / 3), 1)}
    place |= {6: ((1 / 3, 2 / 3), 1), 7: ((2 / 3, 1.1), 1)}
    for seg, ((lo, hi), side) in place.items():
        hypo = _draw(dataclasses.replace(p, hypokinetic_segments=(seg,), segment_motion=0.0))
        np.testing.assert_array_equal(hypo.frames[0], normal.frames[0])
        np.testing.assert_array_equal(hypo.lv_mask[0], normal.lv_mask[0])
        grown = hypo.lv_mask[es] & ~normal.lv_mask[es]
        assert grown.sum() > 10 and not np.any(normal.lv_mask[es] & ~hypo.lv_mask[es]), seg
        x_long, y_short = _lv_coords(normal, grown)
        assert lo < x_long.mean() / (2 * normal.lv_long[es]) < hi, seg
        assert np.all(np.sign(y_short) == side), seg
        assert hypo.ef < normal.ef - (5.0 if seg in (1, 2, 6, 7) else 1.0), seg
    # Full motion left in the segment: the same picture as the normal heart.
    same = _draw(dataclasses.replace(p, hypokinetic_segments=(6,), segment_motion=1.0))
    np.testing.assert_array_equal(same.frames, normal.frames)


def test_degrade_lowers_contrast_and_keeps_the_sector():
    v = _draw(_params(0))
    es = v.es_frame

    def contrast(frames: np.ndarray) -> float:
        f = frames[es].astype(float)
        tissue = ~v.lv_mask[es] & (v.frames[es] > 0)
        cavity = f[v.lv_mask[es]]
        return (f[tissue].mean() - cavity.mean()) / cavity.std()  # contrast-to-noise ratio

    out = [syn.degrade(v.frames, a, np.random.default_rng(0)) for a in (0.0, 0.5, 1.0)]
    assert out[0] is v.frames
    c = [contrast(f) for f in out]
    assert c[0] > c[1] > c[2] and c[2] < 0.4 * c[0], c
    for f in out[1:]:
        assert f.dtype == np.uint8 and f.shape == v.frames.shape
        assert np.all(f[:, v.frames.max(axis=0) == 0] == 0)
    with pytest.raises(ConfigError, match="amount must lie in"):
        syn.degrade(v.frames, 1.5, np.random.default_rng(0))
