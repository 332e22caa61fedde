"""From a config to ready batches: synthetic set (if asked), one-time preparation, split pipelines.

``prepare(config, workdir)`` returns a :class:`DataBundle` that the training loop asks for train
batches of an epoch, eval batches at given clip starts, the per-epoch validation starts (3 independent
uniform starts per video, drawn afresh each epoch, as the official ``validate``), the test starts (the
official ``.pkl``/our JSON when ``data.test_start_indexes`` is set, else drawn from ``eval.seed``, distinct
per video like the official file, and saved as ``<workdir>/test_start_indexes.json``) and the
training-set mean EF.

Config fields read here besides the clip settings (:meth:`clips.ClipSpec.from_config`):
``data.channels`` (3 = RGB, official; 1 = luma), ``data.drop_truncated`` (False) and
``data.hash_videos`` (False), see :class:`echonet_tfds.PrepareOptions`.

Prepared data lives once per machine, not once per workdir: ``data.data_dir`` empty means
:func:`default_data_dir` (``<data home>/tfds``), and a synthetic set without ``data.root`` is written
to :func:`synthetic_root` (``<data home>/synthetic/<name>_<hash of its config>``), where the data
home is :func:`data_home` (``$COREECHO_DATA_DIR``, else ``$XDG_CACHE_HOME/coreecho_jax``, else
``~/.cache/coreecho_jax``). Training, evaluation and a second run therefore reuse one preparation;
each is written under a lock (:func:`echonet_tfds.preparation_lock`), so a second process waits for the
first and then reuses its result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from coreecho_jax import logs, seeds
from coreecho_jax.data import echonet_layout as layout
from coreecho_jax.data import synthetic
from coreecho_jax.data.clips import ClipSpec
from coreecho_jax.data.echonet import echonet_tfds, pipeline, reader, start_indexes, tf_runtime
from coreecho_jax.data.home import data_home
from coreecho_jax.errors import ConfigError


def default_data_dir() -> Path:
    """The TFDS data directory when ``data.data_dir`` is empty: ``<data home>/tfds``."""
    return data_home() / "tfds"


def data_dir_of(config: ml_collections.ConfigDict) -> Path:
    """Where the prepared TFDS dataset lives: ``data.data_dir``, else :func:`default_data_dir`."""
    return Path(config.data.data_dir).expanduser() if config.data.data_dir else default_data_dir()


def _synthetic_config(data: ml_collections.ConfigDict) -> synthetic.SyntheticConfig:
    return synthetic.SyntheticConfig(n_videos=int(data.synthetic.n_videos), seed=int(data.synthetic.seed))


def synthetic_root(config: ml_collections.ConfigDict) -> Path:
    """Where the synthetic set of ``config`` is written: ``data.root``, else a shared folder keyed by its config.

    ``<data home>/synthetic/echonet_n<videos>_seed<seed>[_masks]_<hash>``: the hash covers the
    generating config, the writer's format version, the masks switch and the OpenCV version (which
    draws the frames), so one folder holds exactly what a fresh write would give on this machine.
    """
    data = config.data
    if data.root:
        return Path(data.root)
    cfg = _synthetic_config(data)
    masks = bool(data.synthetic.get("write_masks", False))
    key = {
        "format_version": synthetic.FORMAT_VERSION,
        "config": cfg.to_dict(),
        "write_masks": masks,
        "opencv": cv2.__version__,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    name = f"echonet_n{cfg.n_videos}_seed{cfg.seed}{'_masks' if masks else ''}_{digest}"
    return data_home() / "synthetic" / name


def _source_root(config: ml_collections.ConfigDict) -> Path:
    data = config.data
    if data.synthetic.enabled:
        root = synthetic_root(config)
        root.parent.mkdir(parents=True, exist_ok=True)
        with echonet_tfds.preparation_lock(root.parent / f"{root.name}.lock", str(root)):
            synthetic.write_echonet_dataset(
                root,
                _synthetic_config(data),
                workers=max(1, os.cpu_count() or 1),
                write_masks=bool(data.synthetic.get("write_masks", False)),
            )
        return root
    if not data.root:
        raise ConfigError(
            "config.data.root is empty: pass --config.data.root=/path/to/EchoNet-Dynamic "
            f"(a folder with FileList.csv and Videos/). {layout.LAYOUT}"
        )
    return Path(data.root)


@dataclasses.dataclass
class DataBundle:
    """The prepared dataset of one run and the pipelines over it."""

    config: ml_collections.ConfigDict
    workdir: Path
    root: Path
    builder: object

    # ------------------------------------------------------------------------------------- geometry
    @property
    def spec(self) -> ClipSpec:
        """The clip settings of ``config.data``."""
        return ClipSpec.from_config(self.config.data)

    def videos(self, split: str) -> dict[str, int]:
        """``{'<name>.avi': frame count}`` of a prepared split."""
        return {layout.avi_name(n): f for n, f in echonet_tfds.split_videos(self.builder, split).items()}

    def num_train_batches(self, global_batch: int) -> int:
        """Training steps per epoch for a global batch of ``global_batch`` videos (``drop_last``)."""
        return pipeline.train_batches_per_epoch(self.builder, "train", global_batch)

    # ------------------------------------------------------------------------------------- batches
    def train_batches(self, local_batch: int, *, views: int, epoch: int, stage: int) -> Iterator[dict]:
        """One epoch of augmented training clips ``[B, views, T, S, S, 3]``, reproducible from (seed, stage, epoch)."""
        d = self.config.data
        ds = pipeline.train_dataset(
            self.builder,
            "train",
            spec=self.spec,
            batch_size=local_batch,
            views=views,
            seed=int(self.config.seed) * 10 + stage,
            epoch=epoch,
            shuffle_buffer=int(d.shuffle_buffer),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        return pipeline.as_numpy(ds)

    def eval_batches(self, split: str, starts: dict) -> Iterator[dict]:
        """Every video of ``split`` once, K clips at ``starts``; last batch padded and masked."""
        ds = pipeline.eval_dataset(
            self.builder,
            split,
            starts,
            spec=self.spec,
            batch_size=int(self.config.eval.batch_size) // jax.process_count(),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        return pipeline.as_numpy(ds)

    # --------------------------------------------------------------------------------- clip starts
    def val_starts(self, epoch: int) -> dict:
        """Fresh starts each epoch, independent and uniform per clip (with replacement).

        The official ``validate`` makes 3 passes over the validation set, and each pass draws a new
        start per video (``np.random.choice(F - 140)`` in ``EchoNet.__getitem__``).
        """
        d = self.config.data
        seed = seeds.derive(int(self.config.seed), seeds.VAL_STARTS, epoch)
        return start_indexes.draw_start_indexes(
            self.videos("val"),
            int(self.config.eval.n_clips),
            int(d.frames),
            int(d.stride),
            seed,
            replace=True,
        )

    def test_starts(self) -> dict:
        """Fixed test starts: the configured file, else drawn from ``eval.seed`` and saved beside the results.

        Drawn starts are distinct per video (when the video has enough positions), like the three
        starts per video of the official ``test_start_indexes.pkl``.
        """
        d = self.config.data
        if d.test_start_indexes:
            return start_indexes.load_start_indexes(d.test_start_indexes)
        path = self.workdir / "test_start_indexes.json"
        if path.exists():
            return start_indexes.load_start_indexes(path)
        starts = start_indexes.draw_start_indexes(
            self.videos("test"),
            int(self.config.eval.n_clips),
            int(d.frames),
            int(d.stride),
            int(self.config.eval.seed),
        )
        if jax.process_index() == 0:
            start_indexes.save_start_indexes_json(starts, path)
        return starts

    def train_mean_ef(self) -> float:
        """Mean EF (%) of the prepared training videos: the predict-the-mean baseline."""
        index = reader.read_echonet(
            self.root, drop_untraced=bool(self.config.data.drop_untraced), check_videos=False
        )
        kept = set(echonet_tfds.split_videos(self.builder, "train"))
        efs = [r.ef for r in index.split("train") if r.filename in kept]
        return float(np.mean(efs))


def prepare(config: ml_collections.ConfigDict, workdir: str | Path) -> DataBundle:
    """Writes the synthetic set if enabled, prepares the TFDS dataset once, returns the bundle.

    Both go to the machine's shared folders unless ``data.root`` / ``data.data_dir`` say otherwise
    (see the module doc); ``workdir`` only receives the run's own files (e.g. the test starts).
    """
    tf_runtime.hide_gpus_from_tensorflow()
    workdir = Path(workdir)
    data_dir = data_dir_of(config)
    options = echonet_tfds.PrepareOptions.from_config(config.data)
    logs.watch(data_dir / echonet_tfds.DATASET_NAME, summary=True)  # a preparation is "wrote: ..." too
    if config.data.synthetic.enabled:
        logs.watch(synthetic_root(config), summary=True)

    def build() -> tuple[Path, Any]:
        root = _source_root(config)
        return root, echonet_tfds.prepare_echonet(root, data_dir, options)

    # Several processes: process 0 writes (synthetic set, preparation) first; the others then find it
    # ready on a shared disk, or prepare their own copy on a local one. No two processes write at once
    # (and the locks keep other runs on the same machine out while one writes).
    if jax.process_count() > 1 and jax.process_index() != 0:
        multihost_utils.sync_global_devices("coreecho_jax.data.prepare")
        root, builder = build()
    else:
        root, builder = build()
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("coreecho_jax.data.prepare")
    return DataBundle(config=config, workdir=workdir, root=root, builder=builder)


def describe(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Prepares the data and prints a per-split summary and one training batch's shapes and ranges."""
    bundle = prepare(config, workdir)
    summary: dict = {"root": str(bundle.root), "prepared": str(bundle.builder.data_dir), "splits": {}}
    index = reader.read_echonet(
        bundle.root, drop_untraced=bool(config.data.drop_untraced), check_videos=False
    )
    print(f"dataset: {bundle.root}\nprepared: {bundle.builder.data_dir}")
    span = ClipSpec.from_config(config.data).span
    for split in layout.SPLITS:
        frames = np.array(list(echonet_tfds.split_videos(bundle.builder, split).values()))
        kept = set(echonet_tfds.split_videos(bundle.builder, split))
        ef = np.array([r.ef for r in index.split(split) if r.filename in kept])
        short = int(np.sum(frames < span))
        summary["splits"][split] = {
            "videos": int(len(frames)),
            "ef_mean": float(ef.mean()),
            "ef_std": float(ef.std()),
            "frames_min": int(frames.min()),
            "frames_max": int(frames.max()),
            "shorter_than_a_clip_span": short,
        }
        print(
            f"  {split:5s}: {len(frames):5d} videos, EF {ef.mean():5.1f} +- {ef.std():4.1f} % "
            f"(min {ef.min():.1f}, max {ef.max():.1f}), frames {frames.min()}-{frames.max()} "
            f"({short} padded to {span})"
        )
    batch = next(bundle.train_batches(int(config.stage1.batch_size), views=2, epoch=0, stage=1))
    print("one stage-1 batch:")
    summary["batch"] = {}
    for key, value in batch.items():
        value = np.asarray(value)
        desc = {"shape": list(value.shape), "dtype": str(value.dtype)}
        if value.dtype.kind in "biuf":
            desc.update(min=float(value.min()), max=float(value.max()))
            print(f"  {key:10s} {str(value.shape):28s} {value.dtype}  [{value.min():.4g}, {value.max():.4g}]")
        else:
            print(f"  {key:10s} {str(value.shape):28s} {value.dtype}")
        summary["batch"][key] = desc
    return summary
