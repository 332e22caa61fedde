"""The EchoNet-Dynamic layout and protocol facts, in one place.

Imported by the reader (``echonet``), the synthetic writer, the TFDS preparation and the clip pipeline,
so that a file name rule or a column list exists once. On disk::

    <root>/FileList.csv        FileName, EF, ESV, EDV, FrameHeight, FrameWidth, FPS, NumberOfFrames, Split
    <root>/VolumeTracings.csv  FileName, X1, Y1, X2, Y2, Frame   (optional; FileName with .avi)
    <root>/Videos/<FileName>.avi

The clip facts are those of the official CoReEcho loader (``dataset.py``, ``EchoNetDynamic``):
36 frames at stride 4, videos shorter than 36 * 4 = 144 frames padded with black frames at the end,
a +-6 px translation, 112 x 112 frames.
"""

from __future__ import annotations

FILELIST = "FileList.csv"
TRACINGS = "VolumeTracings.csv"
VIDEO_DIR = "Videos"
VIDEO_SUFFIX = ".avi"

#: Split names as the library spells them, and as FileList.csv spells them (any case is accepted).
SPLITS = ("train", "val", "test")
FILELIST_SPLITS = ("TRAIN", "VAL", "TEST")
FILELIST_COLUMNS = (
    "FileName",
    "EF",
    "ESV",
    "EDV",
    "FrameHeight",
    "FrameWidth",
    "FPS",
    "NumberOfFrames",
    "Split",
)
REQUIRED_COLUMNS = ("FileName", "EF", "Split")
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")

#: Frame size of EchoNet-Dynamic videos and of the model input, in pixels.
FRAME_SIZE = 112
#: Frames per clip (official ``--frames``) and temporal stride (official ``--frequency``).
CLIP_FRAMES = 36
CLIP_STRIDE = 4
#: Videos shorter than this many frames are padded to it (``CLIP_FRAMES * CLIP_STRIDE``).
PAD_TO_FRAMES = CLIP_FRAMES * CLIP_STRIDE
#: Black border, in pixels per side, of the training translation (``PadIfNeeded(124)`` then crop 112).
TRANSLATION_PAD = 6

LAYOUT = (
    "Expected the EchoNet-Dynamic layout:\n"
    f"  <root>/{FILELIST}        columns {', '.join(FILELIST_COLUMNS)} "
    f"(Split = {'/'.join(FILELIST_SPLITS)}; FileName without {VIDEO_SUFFIX})\n"
    f"  <root>/{TRACINGS}  columns {', '.join(TRACING_COLUMNS)} (optional; FileName with {VIDEO_SUFFIX})\n"
    f"  <root>/{VIDEO_DIR}/<FileName>{VIDEO_SUFFIX}"
)


def stem(name: str) -> str:
    """``FileName`` without the ``.avi`` suffix (FileList.csv's form; ``.avi`` is accepted there too)."""
    return name[: -len(VIDEO_SUFFIX)] if name.lower().endswith(VIDEO_SUFFIX) else name


def avi_name(name: str) -> str:
    """``FileName`` with the ``.avi`` suffix (VolumeTracings.csv's and the start-index files' form)."""
    return stem(name) + VIDEO_SUFFIX
