"""Import of PyTorch checkpoints: fixture .pth files reproduce tiny_io.npz; CLI round trip."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

from coreecho_jax import cli
from coreecho_jax.checkpoints.key_map import KeyMapError
from coreecho_jax.checkpoints.torch_import import import_pth, restore_imported, save_imported
from coreecho_jax.checkpoints.torch_pth import read_state_dicts
from coreecho_jax.errors import CheckpointError
from coreecho_jax.models.coreecho import CoReEcho
from coreecho_jax.models.uniformer import UniFormer
from tests.checkpoints.test_torch_pth import write_state_dict_pth
from tests.paths import FIXTURES

CKPT = FIXTURES / "checkpoints"
TINY_HEAD_DIM = 16  # the fixtures' head_dim (not visible in the weights)
K400_FILES = ["tiny_k400_flat.pth", "tiny_k400_nested.pth", "tiny_k400_legacy.pth"]
NUM_BATCHES_TRACKED = [
    "blocks1.0.norm1.num_batches_tracked",
    "blocks1.0.norm2.num_batches_tracked",
    "blocks2.0.norm1.num_batches_tracked",
    "blocks2.0.norm2.num_batches_tracked",
    "norm.num_batches_tracked",
]


@pytest.fixture(scope="module")
def ref():
    data = np.load(CKPT / "tiny_io.npz")
    out = {k: data[k] for k in data.files}
    out["x"] = np.transpose(out["input"], (0, 2, 3, 4, 1))  # NCTHW -> NTHWC
    return out


@nnx.jit
def _k400_outputs(model: UniFormer, x: jax.Array):
    pooled = model(x)
    return pooled, model.logits(pooled)


@nnx.jit
def _coreecho_outputs(model: CoReEcho, x: jax.Array):
    return model(x)


def _assert_rel_close(actual, expected, what: str) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    err = np.max(np.abs(actual - expected))
    assert err <= 1e-5 * np.max(np.abs(expected)), f"{what}: max|diff| {err}"


def _assert_coreecho_matches(model: CoReEcho, ref: dict) -> None:
    pred, pooled = _coreecho_outputs(model, ref["x"])
    _assert_rel_close(pooled, ref["coreecho_pooled"], "coreecho_pooled")
    np.testing.assert_allclose(np.asarray(pred), ref["coreecho_pred"][:, 0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", K400_FILES)
def test_k400_files_reproduce_reference_outputs(ref, name):
    model, info = import_pth(CKPT / name, head_dim=TINY_HEAD_DIM, with_classifier=True)
    assert isinstance(model, UniFormer) and info.model_type == "uniformer" and not info.has_head
    assert info.config.depth == (1, 1, 1, 1) and info.config.dims == (16, 32, 64, 128)
    assert info.config.num_classes == 400
    assert info.meta["format"] == ("model" if "nested" in name else "flat")
    assert len(info.loaded) == 95 - 5 and "head.weight" in info.loaded
    assert list(info.ignored) == NUM_BATCHES_TRACKED
    pooled, logits = _k400_outputs(model, ref["x"])
    _assert_rel_close(pooled, ref["pooled"], "pooled")
    _assert_rel_close(logits, ref["k400_logits"], "k400_logits")


def test_without_head_dim_the_tiny_file_gets_its_preset_s_and_reproduces_the_reference(ref):
    """head_dim is not in the weights; 64 (UniFormer-S's) also divides the tiny model's attention widths,
    so a fixed default loaded the file and silently computed other numbers."""
    model, info = import_pth(CKPT / "tiny_coreecho_best.pth")
    assert info.config.head_dim == TINY_HEAD_DIM
    _assert_coreecho_matches(model, ref)
    model, _ = import_pth(CKPT / "tiny_coreecho_best.pth", head_dim=64)  # an explicit value is kept
    assert model.encoder.config.head_dim == 64


def test_k400_classifier_is_ignored_by_default():
    model, info = import_pth(CKPT / "tiny_k400_flat.pth", head_dim=TINY_HEAD_DIM)
    assert model.head is None and info.config.num_classes is None
    assert sorted(info.ignored) == sorted(NUM_BATCHES_TRACKED + ["head.bias", "head.weight"])
    full, _ = import_pth(CKPT / "tiny_k400_flat.pth", head_dim=TINY_HEAD_DIM, with_classifier=True)
    ours = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    theirs = nnx.to_pure_dict(nnx.state(full, nnx.Param))
    del theirs["head"]
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def test_coreecho_file_reproduces_reference_outputs(ref):
    model, info = import_pth(CKPT / "tiny_coreecho_best.pth", head_dim=TINY_HEAD_DIM)
    assert isinstance(model, CoReEcho) and info.model_type == "coreecho" and info.has_head
    assert info.meta["epoch"] == 12 and info.meta["best_error"] == 4.125
    assert info.config.num_classes is None
    assert len(info.loaded) == 88 + 12
    assert "regressor.6.bias" in info.loaded and "regressor.0.num_batches_tracked" in info.ignored
    assert {"head.weight", "head.bias"} <= set(info.ignored)  # CoReEcho's dead backbone head
    _assert_coreecho_matches(model, ref)


def test_cli_round_trip(ref, tmp_path, capsys):
    out = tmp_path / "imported"
    argv = ["import-weights", f"--pth={CKPT / 'tiny_coreecho_best.pth'}", f"--out={out}", "--head_dim=16"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "keys mapped: 100" in printed and "parameters:" in printed
    assert "regressor.3.num_batches_tracked" in printed
    spec = json.loads((out / "model_config.json").read_text())
    assert spec["model_type"] == "coreecho" and spec["has_head"] is True
    assert spec["uniformer_config"]["head_dim"] == 16
    assert spec["uniformer_config"]["dims"] == [16, 32, 64, 128]
    assert spec["meta"]["epoch"] == 12 and spec["meta"]["best_error"] == 4.125
    assert spec["source"] == str(CKPT / "tiny_coreecho_best.pth")

    restored = restore_imported(out)
    direct, _ = import_pth(CKPT / "tiny_coreecho_best.pth", head_dim=TINY_HEAD_DIM)
    jax.tree.map(
        np.testing.assert_array_equal,
        nnx.to_pure_dict(nnx.state(restored, nnx.Not(nnx.RngState))),
        nnx.to_pure_dict(nnx.state(direct, nnx.Not(nnx.RngState))),
    )
    _assert_coreecho_matches(restored, ref)

    # a second conversion into the same directory needs --force
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err


def test_cli_k400_round_trip_keeps_classifier(tmp_path, capsys):
    out = tmp_path / "k400"
    argv = ["import-weights", f"--pth={CKPT / 'tiny_k400_legacy.pth'}", f"--out={out}", "--head_dim=16"]
    argv.append("--with_classifier")
    assert cli.main(argv) == 0
    assert "keys mapped: 90" in capsys.readouterr().out
    restored = restore_imported(out)
    direct, _ = import_pth(CKPT / "tiny_k400_flat.pth", head_dim=TINY_HEAD_DIM, with_classifier=True)
    assert isinstance(restored, UniFormer) and restored.config.num_classes == 400
    jax.tree.map(
        np.testing.assert_array_equal,
        nnx.to_pure_dict(nnx.state(restored, nnx.Not(nnx.RngState))),
        nnx.to_pure_dict(nnx.state(direct, nnx.Not(nnx.RngState))),
    )


def _fails(argv: list[str]) -> None:
    """``coreecho <argv>`` ends with status 1 (an error line on stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 1


def test_cli_refuses_unsafe_checkpoint(tmp_path, capfd):
    out = tmp_path / "never"
    _fails(["import-weights", f"--pth={CKPT / 'unsafe_pickle.pth'}", f"--out={out}"])
    captured = capfd.readouterr()
    assert "refused" in captured.err and "print" in captured.err and "unsafe_pickle.pth" in captured.err
    assert "UNSAFE-PICKLE-EXECUTED" not in captured.out + captured.err
    assert not (out / "model").exists()


def test_cli_missing_file_and_restore_errors(tmp_path, capsys):
    _fails(["import-weights", f"--pth={tmp_path / 'absent.pth'}", f"--out={tmp_path / 'o'}"])
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "absent.pth" in line
    with pytest.raises(FileNotFoundError, match="model_config.json"):
        restore_imported(tmp_path)


def test_classifier_request_on_coreecho_file_is_an_error():
    with pytest.raises(ValueError, match="no Kinetics classifier"):
        import_pth(CKPT / "tiny_coreecho_best.pth", head_dim=TINY_HEAD_DIM, with_classifier=True)


def test_imported_model_is_concrete_with_dropout_streams():
    model, _ = import_pth(CKPT / "tiny_coreecho_best.pth", head_dim=TINY_HEAD_DIM)
    leaves = jax.tree.leaves(nnx.state(model))
    assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves)
    keys = jax.tree.leaves(nnx.state(model, nnx.RngKey))
    distinct = {str(jax.random.key_data(k)) for k in keys}
    assert len(keys) >= 2 and len(distinct) == len(keys)  # one stream per dropout layer


def test_cli_flags_are_absl_flags_like_main(tmp_path, capsys):
    assert cli.main(["import-weights", "--help"]) == 0
    assert "--head_dim" in capsys.readouterr().out
    argv = ["import-weights", "--pth", str(CKPT / "tiny_coreecho_best.pth"), "--out", str(tmp_path / "o")]
    _fails([*argv, "--head-dim", "16"])
    assert capsys.readouterr().err == (
        "error: --head-dim: unknown flag; did you mean --head_dim? (the command's --help lists its flags)\n"
    )
    _fails(argv[:3])
    assert capsys.readouterr().err.startswith("error: --out is required")
    assert not (tmp_path / "o").exists()


def test_damaged_imported_weights_are_one_checkpoint_error_line(tmp_path):
    out = save_imported(
        *import_pth(CKPT / "tiny_coreecho_best.pth", head_dim=TINY_HEAD_DIM), tmp_path / "imp"
    )
    data = [p for p in (out / "model" / "ocdbt.process_0" / "d").iterdir() if p.stat().st_size > 64_000]
    assert data  # the weights' data files (the metadata stays readable)
    for path in data:
        path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    with pytest.raises(CheckpointError) as info:
        restore_imported(out)
    message = str(info.value)
    assert message.startswith(
        f"{out / 'model'}: unreadable (damaged) weights (ValueError: FAILED_PRECONDITION: "
    )
    assert message.endswith("); import the .pth again") and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback


def test_a_pth_that_does_not_fit_names_the_file(tmp_path):
    """A state_dict without its last stage: the inference error, in one line after the file name."""
    ckpt = read_state_dicts(CKPT / "tiny_k400_flat.pth")
    partial = {k: v for k, v in ckpt.encoder.items() if not k.startswith("blocks4.")}
    with pytest.raises(KeyMapError) as info:
        import_pth(write_state_dict_pth(tmp_path / "partial.pth", partial), head_dim=TINY_HEAD_DIM)
    assert str(info.value) == (
        f"{tmp_path / 'partial.pth'}: blocks4: expected block indices 0..n-1, found []"
    )
