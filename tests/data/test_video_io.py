"""Tests for coreecho_jax.data.video.video_io and coreecho_jax.data.video.dicom.

Every input (AVI, MP4, DICOM) is built inside the test under tmp_path.
"""

from __future__ import annotations

import io

import chex
import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from coreecho_jax.data.video.dicom import dicom_fps, dicom_regions, largest_2d_region
from coreecho_jax.data.video.video_io import (
    CropBox,
    Video,
    VideoNotFoundError,
    VideoReadError,
    count_frames,
    foreground_mask,
    load_echo_video,
    mask_box,
    probe_video,
    read_video,
    resample_indices,
    rgb_to_gray,
    square_crop_resize,
    write_video,
)

# ----------------------------------------------------------------------------- inputs


def smooth_frames(t: int, h: int, w: int, *, color: bool = False, seed: int = 0) -> np.ndarray:
    """uint8 [T,H,W] or [T,H,W,3] of smooth moving patterns (compress well with JPEG/MPEG-4)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = 3 if color else 1
    phases = rng.uniform(0, 2 * np.pi, size=(channels, 2))
    out = np.empty((t, h, w, channels), dtype=np.uint8)
    for i in range(t):
        for c in range(channels):
            img = (
                128
                + 60 * np.sin(xx / (6 + 3 * c) + i / 4 + phases[c, 0])
                + 50 * np.cos(yy / (8 + 2 * c) - i / 5 + phases[c, 1])
            )
            out[i, ..., c] = np.clip(img, 0, 255).astype(np.uint8)
    return out if color else out[..., 0]


def make_dicom(
    path,
    frames: np.ndarray,
    *,
    photometric: str,
    encoded_frames: list[bytes] | None = None,
    transfer_syntax=ExplicitVRLittleEndian,
    pixel_data: bool = True,
    pixel_bytes: bytes | None = None,
    **tags,
):
    """Writes a multi-frame ultrasound DICOM holding ``frames`` (uint8 [T,H,W(,3)])."""
    t, h, w = frames.shape[:3]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns, ds.NumberOfFrames = h, w, t
    ds.SamplesPerPixel = 3 if frames.ndim == 4 else 1
    if frames.ndim == 4:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    if pixel_data:
        if encoded_frames is not None:
            ds.PixelData = encapsulate(encoded_frames)
        elif pixel_bytes is not None:
            ds.PixelData = pixel_bytes
        else:
            ds.PixelData = np.ascontiguousarray(frames).tobytes()
        ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 and encoded_frames is None else "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def jpeg_ybr422_frames(frames_rgb: np.ndarray) -> list[bytes]:
    """JPEG baseline with YCbCr 4:2:2 subsampling (Pillow subsampling=1) per frame."""
    out = []
    for frame in frames_rgb:
        buf = io.BytesIO()
        Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=95, subsampling=1)
        out.append(buf.getvalue())
    return out


def region_item(x0, y0, x1, y1, spatial_format=1) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = spatial_format
    item.RegionDataType = 1
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    return item


def echo_like(t: int = 24, h: int = 120, w: int = 160, seed: int = 0):
    """Frames with a moving fan sector, static text, a static grey bar and a moving ECG line.

    Returns (frames uint8 [T,H,W], sector mask [H,W] bool).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    apex_x, apex_y, radius = 70, 18, 90
    angle = np.degrees(np.arctan2(xx - apex_x, yy - apex_y))
    dist = np.hypot(xx - apex_x, yy - apex_y)
    sector = (np.abs(angle) <= 38) & (dist <= radius) & (yy >= apex_y)
    frames = np.zeros((t, h, w), dtype=np.uint8)
    for i in range(t):
        frame = frames[i]
        texture = 60 + 50 * np.sin(dist / 4 - i / 2) + rng.normal(0, 25, (h, w))
        frame[sector] = np.clip(texture, 1, 255)[sector].astype(np.uint8)
        cv2.putText(frame, "HR 72 bpm", (2, 10), cv2.FONT_HERSHEY_PLAIN, 0.7, 255, 1)
        cv2.putText(frame, "GE 4V", (112, 10), cv2.FONT_HERSHEY_PLAIN, 0.7, 200, 1)
        frame[20:100, 150:156] = np.linspace(255, 30, 80, dtype=np.float32)[:, None]
        ecg_x = np.arange(0, w)
        ecg_y = (113 + 3 * np.sin(ecg_x / 5 + i)).astype(int)
        frame[ecg_y, ecg_x] = 220
    return frames, sector


# ----------------------------------------------------------------------------- AVI / MP4


def test_avi_round_trip_grayscale_is_exact(tmp_path):
    frames = smooth_frames(12, 40, 56)
    path = write_video(tmp_path / "clip.avi", frames, fps=50.0)
    video = read_video(path)
    assert isinstance(video, Video)
    chex.assert_shape(video.frames, (12, 40, 56))
    assert video.frames.dtype == np.uint8
    assert video.fps == pytest.approx(50.0)
    assert video.path == path
    np.testing.assert_array_equal(video.frames, frames)  # FFV1 is lossless


def test_avi_colour_keeps_rgb_order_and_gray_is_luma(tmp_path):
    frames = smooth_frames(6, 32, 48, color=True)
    frames[:, :8, :8] = (255, 0, 0)  # pure red corner: catches a BGR/RGB swap
    path = write_video(tmp_path / "rgb.avi", frames, fps=30.0)
    colour = read_video(path, color=True)
    chex.assert_shape(colour.frames, (6, 32, 48, 3))
    np.testing.assert_array_equal(colour.frames, frames)
    np.testing.assert_array_equal(colour.frames[0, 0, 0], [255, 0, 0])
    gray = read_video(path)
    chex.assert_shape(gray.frames, (6, 32, 48))
    expected = rgb_to_gray(frames).astype(int)
    assert np.abs(gray.frames.astype(int) - expected).max() <= 1
    assert gray.frames[0, 0, 0] == 76  # BT.601: 0.299 * 255


def test_mjpg_codec_round_trip_is_close(tmp_path):
    frames = smooth_frames(8, 48, 64)
    video = read_video(write_video(tmp_path / "m.avi", frames, fps=25.0, codec="MJPG"))
    chex.assert_shape(video.frames, frames.shape)
    assert np.abs(video.frames.astype(float) - frames).mean() < 3.0


def test_mp4_round_trip(tmp_path):
    frames = smooth_frames(10, 48, 64, color=True)
    path = write_video(tmp_path / "clip.mp4", frames, fps=24.0)
    video = read_video(path, color=True)
    chex.assert_shape(video.frames, (10, 48, 64, 3))
    assert video.fps == pytest.approx(24.0)
    assert np.abs(video.frames.astype(float) - frames).mean() < 6.0


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.avi", np.zeros((2, 8, 8), np.float32), 30)
    with pytest.raises(ValueError, match="zero frames"):
        write_video(tmp_path / "a.avi", np.zeros((0, 8, 8), np.uint8), 30)
    with pytest.raises(ValueError, match=r"\[T,H,W\] or \[T,H,W,3\]"):
        write_video(tmp_path / "a.avi", np.zeros((2, 8, 8, 2), np.uint8), 30)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "a.avi", np.zeros((2, 8, 8), np.uint8), 0)


def test_probe_and_count_frames_match_decoding(tmp_path):
    frames = smooth_frames(17, 40, 52)
    for name in ("p.avi", "p.mp4"):
        path = write_video(tmp_path / name, frames, fps=40.0)
        info = probe_video(path)
        assert (info.num_frames, info.height, info.width) == (17, 40, 52)
        assert info.fps == pytest.approx(40.0)
        assert count_frames(path) == count_frames(path, exact=True) == read_video(path).num_frames


def test_header_frame_count_lies_for_truncated_avi(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (30, 40, 48), dtype=np.uint8)
    full = write_video(tmp_path / "full.avi", frames, fps=30.0).read_bytes()
    path = tmp_path / "truncated.avi"
    path.write_bytes(full[: len(full) // 2])
    assert count_frames(path) == 30  # the header still says 30
    exact = count_frames(path, exact=True)
    assert 0 < exact < 30
    with pytest.warns(UserWarning, match="truncated"):
        video = read_video(path)
    assert video.num_frames == exact
    assert video.metadata["header_frame_count"] == 30
    np.testing.assert_array_equal(video.frames, frames[:exact])


# ----------------------------------------------------------------------------- errors


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nowhere_video.avi"
    with pytest.raises(VideoReadError, match="nowhere_video.avi.*not found") as info:
        read_video(path)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, ValueError)
    with pytest.raises(VideoNotFoundError, match="nowhere_video.avi"):
        load_echo_video(path)
    with pytest.raises(VideoNotFoundError, match="nowhere_video.avi"):
        probe_video(path)


def test_garbage_avi_names_the_file(tmp_path):
    path = tmp_path / "garbage_bytes.avi"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoReadError, match="garbage_bytes.avi.*cannot open"):
        read_video(path)


def test_zero_frame_avi_names_the_file(tmp_path):
    path = tmp_path / "empty_clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), 30.0, (32, 32), True)
    assert writer.isOpened()
    writer.release()
    assert path.exists()
    with pytest.raises(VideoReadError, match="empty_clip.avi.*no frames.*at least 1"):
        read_video(path)


def test_dicom_without_pixel_data_names_the_file(tmp_path):
    path = make_dicom(
        tmp_path / "no_pixels.dcm",
        np.zeros((2, 8, 8), np.uint8),
        photometric="MONOCHROME2",
        pixel_data=False,
        FrameTime=20.0,
    )
    with pytest.raises(VideoReadError, match="no_pixels.dcm.*no PixelData"):
        read_video(path)


def test_undecodable_dicom_names_file_and_transfer_syntax(tmp_path):
    path = make_dicom(
        tmp_path / "jpegls_scan.dcm",
        np.zeros((2, 8, 8), np.uint8),
        photometric="MONOCHROME2",
        encoded_frames=[b"\xff\xd8\x00\x01"] * 2,
        transfer_syntax=JPEGLSLossless,
    )
    with pytest.raises(VideoReadError, match="jpegls_scan.dcm.*cannot decode.*JPEG-LS"):
        read_video(path)


def test_region_crop_without_regions_is_an_error(tmp_path):
    path = write_video(tmp_path / "plain.avi", smooth_frames(3, 16, 16), fps=30)
    with pytest.raises(ValueError, match="plain.avi.*SequenceOfUltrasoundRegions"):
        load_echo_video(path, crop="region")


# ----------------------------------------------------------------------------- DICOM


def test_dicom_monochrome2_uncompressed(tmp_path):
    frames = smooth_frames(5, 30, 40)
    path = make_dicom(tmp_path / "mono.dcm", frames, photometric="MONOCHROME2", FrameTime=20.0)
    video = read_video(path)
    np.testing.assert_array_equal(video.frames, frames)
    assert video.fps == pytest.approx(50.0)
    assert video.metadata["fps_source"] == "FrameTime"
    colour = read_video(path, color=True)
    chex.assert_shape(colour.frames, (5, 30, 40, 3))
    np.testing.assert_array_equal(colour.frames[..., 1], frames)


def test_dicom_rgb_uncompressed_and_magic_without_suffix(tmp_path):
    frames = smooth_frames(4, 24, 32, color=True)
    path = make_dicom(tmp_path / "IM0001", frames, photometric="RGB", CineRate=30)
    video = read_video(path, color=True)  # no suffix: recognised by 'DICM' at byte 128
    np.testing.assert_array_equal(video.frames, frames)
    assert video.fps == pytest.approx(30.0)
    assert video.metadata["fps_source"] == "CineRate"
    gray = read_video(path)
    np.testing.assert_array_equal(gray.frames, rgb_to_gray(frames))


def test_dicom_ybr_full_422_jpeg_baseline_decodes_to_rgb(tmp_path):
    frames = smooth_frames(4, 32, 48, color=True, seed=3)
    path = make_dicom(
        tmp_path / "ybr.dcm",
        frames,
        photometric="YBR_FULL_422",
        encoded_frames=jpeg_ybr422_frames(frames),
        transfer_syntax=JPEGBaseline8Bit,
        FrameTime=33.3333,
    )
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    video = read_video(path, color=True)
    chex.assert_shape(video.frames, (4, 32, 48, 3))
    error = np.abs(video.frames.astype(float) - frames)
    assert error.mean() < 4.0  # JPEG q95 with 4:2:2 chroma: small error, no YCbCr left
    for c in range(3):  # each channel matches its own source channel best
        assert (
            error[..., c].mean()
            < np.abs(video.frames[..., c].astype(float) - frames[..., (c + 1) % 3]).mean()
        )
    assert video.fps == pytest.approx(30.0, rel=1e-3)
    gray = read_video(path)
    assert np.abs(gray.frames.astype(float) - rgb_to_gray(frames)).mean() < 3.0


def test_dicom_native_ybr_full_422_is_converted_once(tmp_path):
    frames = smooth_frames(3, 16, 24, color=True, seed=4)
    ybr = convert_color_space(frames, "RGB", "YBR_FULL").astype(np.float32)
    # Native 4:2:2 layout: per horizontal pixel pair Y0 Y1 Cb Cr (chroma averaged).
    pairs = ybr.reshape(3, 16, 12, 2, 3)
    packed = np.stack(
        [pairs[..., 0, 0], pairs[..., 1, 0], pairs[..., 1].mean(axis=-1), pairs[..., 2].mean(axis=-1)],
        axis=-1,
    )
    packed = np.clip(np.rint(packed), 0, 255).astype(np.uint8)
    path = make_dicom(
        tmp_path / "native422.dcm",
        frames,
        photometric="YBR_FULL_422",
        pixel_bytes=packed.tobytes(),
        FrameTime=20.0,
    )
    video = read_video(path, color=True)
    chex.assert_shape(video.frames, (3, 16, 24, 3))
    assert np.abs(video.frames.astype(float) - frames).mean() < 4.0


@pytest.mark.parametrize("color", [False, True])
def test_dicom_rle_lossless(tmp_path, color):
    frames = smooth_frames(4, 20, 28, color=color, seed=5)
    path = tmp_path / "rle.dcm"
    make_dicom(path, frames, photometric="RGB" if color else "MONOCHROME2", RecommendedDisplayFrameRate=25)
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == RLELossless
    video = read_video(path, color=color)
    np.testing.assert_array_equal(video.frames, frames)
    assert video.fps == pytest.approx(25.0)
    assert video.metadata["fps_source"] == "RecommendedDisplayFrameRate"


def test_dicom_mpeg2_video_decodes_through_ffmpeg(tmp_path):
    frames = smooth_frames(12, 48, 64, color=True, seed=7)
    stream_path = tmp_path / "stream.m2v"  # raw MPEG-2 elementary stream
    writer = cv2.VideoWriter(
        str(stream_path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mpg2"), 25.0, (64, 48), True
    )
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    stream = stream_path.read_bytes()
    fragments = [stream[i : i + 4000] for i in range(0, len(stream), 4000)]
    path = make_dicom(
        tmp_path / "mpeg2.dcm",
        frames,
        photometric="YBR_PARTIAL_420",
        encoded_frames=[b"".join(fragments)],
        transfer_syntax=MPEG2MPML,
        FrameTime=40.0,
    )
    video = read_video(path, color=True)
    chex.assert_shape(video.frames, (12, 48, 64, 3))
    assert np.abs(video.frames.astype(float) - frames).mean() < 8.0
    assert video.fps == pytest.approx(25.0)


def test_dicom_single_frame_and_probe(tmp_path):
    frames = smooth_frames(1, 20, 30)
    path = make_dicom(tmp_path / "single.dcm", frames, photometric="MONOCHROME2", CineRate=10)
    video = read_video(path)
    chex.assert_shape(video.frames, (1, 20, 30))
    np.testing.assert_array_equal(video.frames, frames)
    multi = make_dicom(
        tmp_path / "multi.dcm", smooth_frames(7, 20, 30), photometric="MONOCHROME2", FrameTime=25.0
    )
    info = probe_video(multi)
    assert (info.num_frames, info.height, info.width) == (7, 20, 30)
    assert info.fps == pytest.approx(40.0)


def test_garbage_dicom_names_the_file(tmp_path):
    path = tmp_path / "broken_scan.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + b"\x07" * 64)
    with pytest.raises(VideoReadError, match="broken_scan.dcm"):
        read_video(path)


def test_dicom_monochrome1_and_12_bit(tmp_path):
    frames = smooth_frames(2, 8, 10)
    inverted = make_dicom(tmp_path / "mono1.dcm", frames, photometric="MONOCHROME1")
    np.testing.assert_array_equal(read_video(inverted).frames, 255 - frames)
    values = frames.astype(np.uint16) * 16  # 12-bit data in 16-bit words
    path = make_dicom(
        tmp_path / "mono12.dcm",
        frames,
        photometric="MONOCHROME2",
        pixel_bytes=values.tobytes(),
        BitsAllocated=16,
        BitsStored=12,
        HighBit=11,
    )
    decoded = read_video(path).frames
    assert decoded.dtype == np.uint8
    expected = np.rint(values * (255 / 4095)).astype(int)
    np.testing.assert_array_equal(decoded, expected)


def test_dicom_fps_order_and_fallbacks():
    ds = Dataset()
    assert dicom_fps(ds)[0] is None
    assert "fps unknown" in dicom_fps(ds)[1]
    ds.FrameTimeVector = [0.0, 20.0, 20.0, 20.0]
    assert dicom_fps(ds) == (pytest.approx(50.0), "FrameTimeVector")
    ds.RecommendedDisplayFrameRate = 25
    assert dicom_fps(ds) == (pytest.approx(25.0), "RecommendedDisplayFrameRate")
    ds.CineRate = 30
    assert dicom_fps(ds) == (pytest.approx(30.0), "CineRate")
    ds.FrameTime = 40.0
    assert dicom_fps(ds) == (pytest.approx(25.0), "FrameTime")
    ds.FrameTime = 0.0  # invalid: falls through to CineRate
    assert dicom_fps(ds) == (pytest.approx(30.0), "CineRate")


def test_dicom_without_timing_has_no_fps_and_cannot_resample(tmp_path):
    path = make_dicom(tmp_path / "untimed.dcm", smooth_frames(3, 16, 16), photometric="MONOCHROME2")
    video = read_video(path)
    assert video.fps is None
    assert "fps unknown" in video.metadata["fps_source"]
    with pytest.raises(ValueError, match="untimed.dcm.*fps"):
        load_echo_video(path, target_fps=25, crop="none")


def test_ultrasound_regions_pick_the_largest_2d_box(tmp_path):
    h, w = 90, 130
    frames = np.zeros((3, h, w), np.uint8)
    frames[:, 10:70, 30:100] = 200  # the 2-D image region (inclusive max 99, 69)
    frames[:, 75:88, :] = 90  # a waveform strip below it
    regions = [
        region_item(2, 2, 20, 20),  # small 2-D region
        region_item(30, 10, 99, 69),  # large 2-D region
        region_item(0, 72, 129, 89, spatial_format=4),  # larger but a waveform (ECG)
    ]
    path = make_dicom(
        tmp_path / "regions.dcm",
        frames,
        photometric="MONOCHROME2",
        FrameTime=20.0,
        SequenceOfUltrasoundRegions=regions,
    )
    ds = pydicom.dcmread(path)
    parsed = dicom_regions(ds)
    assert [r.box for r in parsed] == [
        CropBox(2, 2, 21, 21),
        CropBox(30, 10, 100, 70),
        CropBox(0, 72, 130, 90),
    ]
    assert largest_2d_region(parsed).box == CropBox(30, 10, 100, 70)
    for mode in ("auto", "region"):
        video = load_echo_video(path, crop=mode, channels=1)
        assert video.metadata["crop_mode"] == "region"
        assert video.metadata["crop_box"] == CropBox(30, 10, 100, 70)
        chex.assert_shape(video.frames, (3, 112, 112))
        assert video.frames.dtype == np.uint8
        # 70x60 box padded to 70x70: 5 black rows top and bottom -> 8 rows at 112.
        assert video.frames[:, 10:102, :].min() == 200
        assert video.frames[:, :7, :].max() == 0 and video.frames[:, 105:, :].max() == 0


# ----------------------------------------------------------------------------- cropping


@pytest.mark.parametrize("codec", ["FFV1", "MJPG"])  # lossless, and lossy with block noise
def test_auto_crop_ignores_text_bar_and_ecg(tmp_path, codec):
    frames, sector = echo_like()
    truth = mask_box(sector)
    mask, method = foreground_mask(frames)
    assert method == "motion"
    box = mask_box(mask)
    assert np.abs(np.subtract(box, truth)).max() <= 3, (box, truth)
    path = write_video(tmp_path / "echo.avi", frames, fps=50.0, codec=codec)
    video = load_echo_video(path, channels=1)
    assert video.metadata["crop_mode"] == "sector"
    assert np.abs(np.subtract(video.metadata["crop_box"], truth)).max() <= 3
    chex.assert_shape(video.frames, (frames.shape[0], 112, 112))
    assert video.frames.dtype == np.uint8
    assert video.fps == pytest.approx(50.0)
    colour = load_echo_video(path, size=64)  # RGB by default
    chex.assert_shape(colour.frames, (frames.shape[0], 64, 64, 3))


def test_auto_crop_still_image_uses_bright_component():
    frames, sector = echo_like(t=1)
    mask, method = foreground_mask(frames)
    assert method == "intensity"
    assert np.abs(np.subtract(mask_box(mask), mask_box(sector))).max() <= 3


def test_mask_outside_blacks_out_corners(tmp_path):
    frames, sector = echo_like()
    box = mask_box(sector)
    row, col = box.y1 - 2, box.x0 + 1  # bottom-left corner of the sector's box, outside the fan
    frames[:, row - 2 : row + 2, col - 1 : col + 3] = 250  # a static mark there
    path = write_video(tmp_path / "echo.avi", frames, fps=50.0)
    # crop="none", size=None: 120x160 frame padded to 160x160, 20 black rows on top.
    plain = load_echo_video(path, crop="none", size=None, channels=1)
    masked = load_echo_video(path, crop="none", size=None, mask_outside=True, channels=1)
    assert plain.frames[:, row + 20, col].min() == 250
    assert masked.frames[:, row + 20, col].max() == 0
    inside = np.argwhere(sector)[len(np.argwhere(sector)) // 2]
    np.testing.assert_array_equal(
        masked.frames[:, inside[0] + 20, inside[1]], plain.frames[:, inside[0] + 20, inside[1]]
    )
    assert masked.metadata["mask_outside"] is True


def test_square_crop_resize_pads_and_centres():
    frames = np.full((2, 50, 80), 100, np.uint8)
    out = square_crop_resize(frames, CropBox(10, 0, 50, 20), None)  # 40 wide, 20 tall
    chex.assert_shape(out, (2, 40, 40))
    assert out[:, :10].max() == 0 and out[:, 30:].max() == 0
    assert out[:, 10:30].min() == 100
    small = square_crop_resize(frames, CropBox(0, 0, 50, 50), 112)
    chex.assert_shape(small, (2, 112, 112))
    assert small.min() == 100


def test_crop_none_and_target_fps_resampling(tmp_path):
    frames = np.repeat((np.arange(20, dtype=np.uint8) * 10)[:, None, None], 24, axis=1)
    frames = np.repeat(frames, 24, axis=2)
    path = write_video(tmp_path / "ramp.avi", frames, fps=50.0)
    np.testing.assert_array_equal(resample_indices(20, 50.0, 25.0), np.arange(0, 20, 2))
    # 30 -> 50 fps: output i shows source time i * 0.6 frames -> nearest 0,1,1,2,2,3,4,4.
    np.testing.assert_array_equal(resample_indices(5, 30.0, 50.0), [0, 1, 1, 2, 2, 3, 4, 4])
    video = load_echo_video(path, crop="none", size=12, target_fps=25.0, channels=1)
    chex.assert_shape(video.frames, (10, 12, 12))
    assert video.fps == 25.0
    assert video.metadata["source_fps"] == pytest.approx(50.0)
    np.testing.assert_array_equal(video.metadata["resample_indices"], np.arange(0, 20, 2))
    np.testing.assert_array_equal(video.frames[:, 5, 5], np.arange(0, 200, 20))
    faithful = load_echo_video(path, crop="none", size=12, channels=1)
    assert faithful.num_frames == 20 and faithful.metadata["resample_indices"] is None


def test_no_tensorflow_import():
    import subprocess
    import sys

    code = (
        "import sys; import coreecho_jax.data.video.video_io, coreecho_jax.data.video.dicom; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_large_video_is_shrunk_while_decoding(tmp_path):
    """1080x1920, 30 frames: the peak of numpy memory stays near a few source frames, not the video."""
    import tracemalloc

    t, h, w = 30, 1080, 1920
    path = tmp_path / "big.avi"
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (w, h), True)
    assert writer.isOpened()
    small, sector = echo_like(t=t)  # [T, 120, 160]: the sector and its overlays, scaled up below
    for frame in small:
        big = cv2.resize(frame, (w, h), interpolation=cv2.INTER_NEAREST)
        writer.write(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
    writer.release()
    frame_bytes = h * w * 3
    tracemalloc.start()
    try:
        video = load_echo_video(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    chex.assert_shape(video.frames, (t, 112, 112, 3))
    assert video.metadata["source_shape"] == (t, h, w, 3)
    assert peak < 6 * frame_bytes, (
        f"peak {peak / 2**20:.0f} MiB for {t} frames of {frame_bytes / 2**20:.1f} MiB"
    )
    # The box found on the shrunk analysis frames, scaled back: the sector's box in source pixels.
    expected = mask_box(sector)
    scale = np.array([w / 160, h / 120, w / 160, h / 120])
    assert (
        np.abs(np.subtract(video.metadata["crop_box"], np.multiply(expected, scale))).max() <= 4 * scale.max()
    )
