"""Tests for the config-to-batches layer (coreecho_jax.data.datasets) that need no prepared dataset."""

from types import SimpleNamespace

import ml_collections
import numpy as np

from coreecho_jax.data import datasets
from coreecho_jax.data import echonet_tfds as et
from coreecho_jax.data.clips import ClipSpec


def _config(**data) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "seed": 0,
            "data": {
                "frames": 36,
                "stride": 4,
                "pad": 6,
                "image_size": 112,
                "drop_untraced": True,
                "test_start_indexes": "",
                **data,
            },
            "eval": {"n_clips": 3, "seed": 0},
        }
    )


def _bundle(num_frames: dict[str, dict[str, int]], tmp_path, **data) -> datasets.DataBundle:
    """A DataBundle over a stand-in builder that only carries the per-split video lists."""
    videos = {s: {"filename": list(v), "num_frames": list(v.values())} for s, v in num_frames.items()}
    builder = SimpleNamespace(info=SimpleNamespace(metadata={"videos": videos}))
    return datasets.DataBundle(config=_config(**data), workdir=tmp_path, root=tmp_path, builder=builder)


def test_validation_starts_drawn_with_replacement_and_fresh_each_epoch(tmp_path):
    short = {f"v{i:04d}": 100 for i in range(400)}  # 4 start positions each
    bundle = _bundle({"val": short, "test": short, "train": short}, tmp_path)
    e0, e1 = bundle.val_starts(0), bundle.val_starts(1)
    assert e0.keys() == {f"v{i:04d}.avi" for i in range(400)}
    repeats = np.mean([len(set(v.tolist())) < 3 for v in e0.values()])
    assert abs(repeats - 0.625) < 5 * np.sqrt(0.625 * 0.375 / 400)  # official: independent draws
    assert any(not np.array_equal(e0[k], e1[k]) for k in e0)  # a fresh draw each epoch
    for k in e0:
        np.testing.assert_array_equal(e0[k], bundle.val_starts(0)[k])  # reproducible
    # Test starts: distinct per video (the official file's form), saved and reused.
    test = bundle.test_starts()
    assert all(len(set(v.tolist())) == 3 for v in test.values())
    assert (tmp_path / "test_start_indexes.json").is_file()


def test_clip_spec_options_and_steps_come_from_the_config(tmp_path):
    bundle = _bundle({"train": {f"t{i}": 150 for i in range(37)}}, tmp_path, channels=1, image_size=64)
    assert bundle.spec == ClipSpec(image_size=64, channels=1)
    assert bundle.num_train_batches(16) == 2 and bundle.num_train_batches(4) == 9
    data = _config(channels=1, drop_truncated=True, hash_videos=True).data
    assert et.PrepareOptions.from_config(data) == et.PrepareOptions(
        drop_untraced=True, channels=1, drop_truncated=True, hash_videos=True
    )
    assert et.PrepareOptions.from_config(_config().data) == et.PrepareOptions()  # official defaults
