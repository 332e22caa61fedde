"""Cropping real and synthetic ultrasound DICOMs: when the SequenceOfUltrasoundRegions box is trusted.

The real file is pydicom's own example A4C cine (``pydicom.examples.get_path("ybr_color")``, shipped
inside the pydicom wheel): 320x240, 30 frames, JPEG baseline YBR_FULL_422, a text panel on the right,
labels top left, a toolbar at the bottom, and a region tag (84,31)-(595,414) that no longer fits the
image (the tags were kept when the file was downscaled).
"""

from __future__ import annotations

import chex
import numpy as np
import pytest
from pydicom import examples

from coreecho_jax.data.video.video_io import CropBox, load_echo_video, mask_box, read_video
from tests.data.test_video_io import echo_like, make_dicom, region_item

YBR_COLOR = examples.get_path("ybr_color")


@pytest.fixture(scope="module")
def a4c():
    """(grey frames [30, 240, 320] float32, moving mask, static text mask) of the example cine."""
    frames = read_video(YBR_COLOR).frames.astype(np.float32)
    std = frames.std(axis=0)
    moving = std > 2.0  # the sector's speckle and walls
    static_text = (std == 0) & (frames.max(axis=0) > 60)  # labels, panel, toolbar: never change
    assert static_text.sum() > 500 and static_text[215:].sum() > 100  # the toolbar is there
    return frames, moving, static_text


def inside(box: CropBox, shape: tuple[int, int]) -> np.ndarray:
    keep = np.zeros(shape, dtype=bool)
    keep[box.y0 : box.y1, box.x0 : box.x1] = True
    return keep


def test_region_larger_than_the_image_is_not_trusted(a4c):
    _, moving, static_text = a4c
    video = load_echo_video(YBR_COLOR)
    meta = video.metadata
    assert meta["crop_mode"] == "sector"
    assert meta["crop_note"] == (
        "ultrasound region (84,31)-(595,414) exceeds the 320x240 image; sector crop used"
    )
    assert meta["region_box"] == CropBox(84, 31, 596, 415)
    box = meta["crop_box"]
    keep = inside(box, moving.shape)
    assert moving[keep].sum() / moving.sum() > 0.97  # the whole moving sector
    assert not (static_text & keep).any()  # no label, panel or toolbar pixel
    chex.assert_shape(video.frames, (30, 112, 112, 3))
    # The sector is centred: the heart no longer sits in the left half as in the region crop.
    assert abs((box.x0 + box.x1) / 2 - 160) < 10


def test_crop_can_be_forced_either_way(a4c):
    _, moving, static_text = a4c
    region = load_echo_video(YBR_COLOR, crop="region", channels=1)
    assert region.metadata["crop_mode"] == "region"
    assert region.metadata["crop_box"] == CropBox(84, 31, 320, 240)
    assert "clipped to (84,31)-(319,239)" in region.metadata["crop_note"]
    assert (static_text & inside(region.metadata["crop_box"], moving.shape)).sum() > 100
    chex.assert_shape(region.frames, (30, 112, 112))
    sector = load_echo_video(YBR_COLOR, crop="sector", channels=1)
    assert sector.metadata["crop_mode"] == "sector"
    assert sector.metadata["crop_box"] == load_echo_video(YBR_COLOR).metadata["crop_box"]


@pytest.mark.parametrize(
    ("region", "mode"),
    [
        ((10, 14, 131, 113), "region"),  # fits and frames the sector
        ((0, 0, 60, 40), "sector"),  # fits, but holds little of what moves
        ((10, 14, 400, 300), "sector"),  # reaches past the 160x120 image
    ],
)
def test_auto_uses_a_region_only_when_it_fits_and_holds_the_sector(tmp_path, region, mode):
    frames, sector = echo_like()
    path = make_dicom(
        tmp_path / "echo.dcm",
        frames,
        photometric="MONOCHROME2",
        FrameTime=20.0,
        SequenceOfUltrasoundRegions=[region_item(*region)],
    )
    video = load_echo_video(path, channels=1)
    assert video.metadata["crop_mode"] == mode
    if mode == "region":
        assert video.metadata["crop_box"] == CropBox(10, 14, 132, 114)
        assert video.metadata["crop_note"] is None
    else:
        assert np.abs(np.subtract(video.metadata["crop_box"], mask_box(sector))).max() <= 3
        assert "sector crop used" in video.metadata["crop_note"]


def test_bad_crop_mode_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="echo.dcm.*crop must be one of auto, region, sector, none"):
        load_echo_video(tmp_path / "echo.dcm", crop="middle")
