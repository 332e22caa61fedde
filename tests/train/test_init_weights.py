"""A run starts from a weights folder (coreecho export-weights) as from any checkpoint."""

import jax
import numpy as np
import pytest

import coreecho_jax
from coreecho_jax.checkpoints.architecture import ArchitectureMismatchError
from coreecho_jax.checkpoints.manager import model_state_dict
from coreecho_jax.inference.weights_folder import WeightsError
from coreecho_jax.models.coreecho import build_model
from coreecho_jax.train import init_weights
from tests.inference.test_predict import tiny_config
from tests.inference.test_weights import PTH, make_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("init_weights")
    run = make_run(root)
    return run, coreecho_jax.export_weights(run, root / "exported")


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b), strict=True))


def test_a_weights_folder_with_a_head_sets_encoder_and_head(exported):
    run, folder = exported
    source = build_model(tiny_config().model, seed=0)  # the run's model (make_run: seed 0)
    model = build_model(tiny_config().model, seed=5)
    assert not _equal(model_state_dict(model), model_state_dict(source))
    origin = init_weights.initialize_from(model, folder)
    assert origin.startswith(f"{folder} (weights folder ") and "encoder and regression head" in origin
    assert _equal(model_state_dict(model), model_state_dict(source))


def test_an_encoder_only_folder_sets_the_encoder_and_keeps_the_head(tmp_path):
    folder = coreecho_jax.export_weights(PTH / "tiny_k400_flat.pth", tmp_path / "k400", config=tiny_config())
    model = build_model(tiny_config().model, seed=5)
    head_before = model_state_dict(model.head)
    origin = init_weights.initialize_from(model, folder)
    assert "encoder; the head keeps its initialisation" in origin
    expected = coreecho_jax.from_pretrained(folder).trained.model.encoder
    assert _equal(model_state_dict(model.encoder), model_state_dict(expected))
    assert _equal(model_state_dict(model.head), head_before)


def test_a_folder_of_another_architecture_names_the_setting(exported):
    _, folder = exported
    other = tiny_config().model
    other.dims = [16, 32, 64, 256]
    with pytest.raises(ArchitectureMismatchError, match=r"holds a weights folder of architecture .* select"):
        init_weights.initialize_from(build_model(other, seed=0), folder)


def test_a_changed_folder_is_refused_before_any_weight_is_set(exported, tmp_path):
    import shutil

    _, folder = exported
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    with open(changed / "model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    model = build_model(tiny_config().model, seed=5)
    before = model_state_dict(model)
    with pytest.raises(WeightsError, match=r"model.safetensors"):
        init_weights.initialize_from(model, changed)
    assert _equal(model_state_dict(model), before)


def test_other_sources_go_to_the_checkpoint_loader(exported):
    run, _ = exported
    model = build_model(tiny_config().model, seed=5)
    assert init_weights.initialize_from(model, "") == "random initialisation"
    assert init_weights.initialize_from(model, run).startswith(f"{run}/checkpoints/stage2/best")
