"""Synthetic apical-four-chamber echo videos whose labels follow from the drawn heart.

- ``heart``: the drawing (``sample_heart_params`` -> ``HeartParams`` -> ``draw_video`` ->
  ``DrawnVideo``: frames, per-frame LV masks, volumes, ED/ES, EF), shared by every dataset writer.
- ``quality``: image-quality degradation (``degrade``).
- ``echonet``: the EchoNet-Dynamic layout writer (``write_echonet_dataset``).
- ``camus``, ``hmcqu``: the CAMUS (2019 mhd and 2023 NIfTI releases) and HMC-QU (Kaggle) layout writers.
- ``manifest``: a cohort of your own (videos and ``manifest.csv``) for ``configs/custom_demo.py``.

``coreecho synthetic --dataset=echonet --root=DIR --n=512 --seed=0`` writes an EchoNet-Dynamic set.
"""

from coreecho_jax.data.synthetic.camus import CamusSyntheticConfig, write_camus_dataset
from coreecho_jax.data.synthetic.echonet import (
    FORMAT_VERSION,
    MASK_DIR,
    NUM_CHORDS,
    DatasetExistsError,
    SyntheticConfig,
    draw_echonet_video,
    read_mask,
    sample_num_frames,
    split_assignment,
    tracing_chords,
    video_file_name,
    write_echonet_dataset,
)
from coreecho_jax.data.synthetic.heart import (
    A4C_SEGMENTS,
    CONTRACTION_LEVELS,
    DrawingConfig,
    DrawnVideo,
    HeartParams,
    contraction,
    disc_volumes,
    draw_video,
    sample_ef,
    sample_heart_params,
    video_rng,
)
from coreecho_jax.data.synthetic.hmcqu import HmcQuSyntheticConfig, write_hmcqu_dataset
from coreecho_jax.data.synthetic.manifest import ManifestSyntheticConfig, write_manifest_dataset
from coreecho_jax.data.synthetic.quality import degrade

__all__ = [
    "A4C_SEGMENTS",
    "CamusSyntheticConfig",
    "HmcQuSyntheticConfig",
    "ManifestSyntheticConfig",
    "write_camus_dataset",
    "write_hmcqu_dataset",
    "write_manifest_dataset",
    "CONTRACTION_LEVELS",
    "FORMAT_VERSION",
    "MASK_DIR",
    "NUM_CHORDS",
    "DatasetExistsError",
    "DrawingConfig",
    "DrawnVideo",
    "HeartParams",
    "SyntheticConfig",
    "contraction",
    "degrade",
    "disc_volumes",
    "draw_echonet_video",
    "draw_video",
    "read_mask",
    "sample_ef",
    "sample_heart_params",
    "sample_num_frames",
    "split_assignment",
    "tracing_chords",
    "video_file_name",
    "video_rng",
    "write_echonet_dataset",
]
