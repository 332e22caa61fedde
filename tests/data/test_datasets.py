"""Tests for the config-to-batches layer (coreecho_jax.data.echonet.inputs) that need no prepared dataset."""

from pathlib import Path
from types import SimpleNamespace

import ml_collections
import numpy as np

from coreecho_jax.data.clips import ClipSpec
from coreecho_jax.data.echonet import echonet_tfds as et
from coreecho_jax.data.echonet import inputs


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


def _bundle(num_frames: dict[str, dict[str, int]], tmp_path, **data) -> inputs.DataBundle:
    """A DataBundle over a stand-in builder that only carries the per-split video lists."""
    videos = {s: {"filename": list(v), "num_frames": list(v.values())} for s, v in num_frames.items()}
    builder = SimpleNamespace(info=SimpleNamespace(metadata={"videos": videos}))
    return inputs.DataBundle(config=_config(**data), workdir=tmp_path, root=tmp_path, builder=builder)


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


def test_shared_data_home_from_env_xdg_or_home_and_explicit_data_dir_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("COREECHO_DATA_DIR", str(tmp_path / "shared"))
    assert inputs.data_home() == tmp_path / "shared"
    assert inputs.data_dir_of(_config(data_dir="")) == tmp_path / "shared" / "tfds"
    assert inputs.data_dir_of(_config(data_dir=str(tmp_path / "mine"))) == tmp_path / "mine"
    monkeypatch.delenv("COREECHO_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert inputs.default_data_dir() == tmp_path / "xdg" / "coreecho_jax" / "tfds"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert inputs.default_data_dir() == tmp_path / "home" / ".cache" / "coreecho_jax" / "tfds"


def _synthetic_config(tmp_path, **synthetic) -> ml_collections.ConfigDict:
    from configs import demo

    c = demo.get_config("quick")
    c.data.synthetic.n_videos = 8  # 6 train, 1 val, 1 test
    c.data.synthetic.update(synthetic)
    return c


def test_synthetic_set_and_preparation_are_shared_by_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("COREECHO_DATA_DIR", str(tmp_path / "shared"))
    config = _synthetic_config(tmp_path)
    root = inputs.synthetic_root(config)
    assert root.parent == tmp_path / "shared" / "synthetic" and root.name.startswith("echonet_n8_seed0_")
    assert inputs.synthetic_root(_synthetic_config(tmp_path, seed=1)) != root  # keyed by its config
    assert inputs.synthetic_root(_synthetic_config(tmp_path, n_videos=9)) != root
    assert inputs.synthetic_root(_synthetic_config(tmp_path, write_masks=True)) != root
    explicit = _synthetic_config(tmp_path)
    explicit.data.root = str(tmp_path / "here")
    assert inputs.synthetic_root(explicit) == tmp_path / "here"  # data.root wins
    first = inputs.prepare(config, tmp_path / "run1")
    assert first.root == root and Path(first.builder.data_dir).is_relative_to(tmp_path / "shared" / "tfds")
    written = {p: p.stat().st_mtime_ns for p in [*root.rglob("*"), *Path(first.builder.data_dir).rglob("*")]}
    second = inputs.prepare(config, tmp_path / "run2")  # another run, another workdir: nothing rewritten
    assert second.root == root and second.builder.data_dir == first.builder.data_dir
    assert {p: p.stat().st_mtime_ns for p in written} == written
    assert not (tmp_path / "run1").exists() and not (tmp_path / "run2").exists()  # nothing per workdir
    assert len(second.videos("train")) == 6
