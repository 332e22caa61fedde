"""Video Grad-CAM: the split forward is the model's, the map is Grad-CAM by hand, never blank or uniform
by construction, the LV-focus measure, the pictures and the command; Grad-CAM of transfer folds (the
fold's own clips, normalisation and tested model) and the Fig. 3 figure of three models.

One randomly initialised tiny CoReEcho model and one batch of echo-like 8-frame 32x32 clips serve the
unit tests (one compilation of the Grad-CAM step). The transfer tests train one-epoch quick CAMUS and
HMC-QU probes from that model, saved as an EchoNet run (a module fixture, ~2 minutes: marked slow).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys

import chex
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs import camus_demo, demo, hmcqu_demo
from coreecho_jax import cli
from coreecho_jax.analysis import cam_lv, figures, gradcam, lv_focus, runs
from coreecho_jax.checkpoints.manager import RunCheckpoints, model_state_dict
from coreecho_jax.data import clips
from coreecho_jax.data.synthetic.echonet import read_mask, write_echonet_dataset
from coreecho_jax.data.transfer import cycles
from coreecho_jax.data.video.video_io import count_frames, read_video
from coreecho_jax.errors import CheckpointError, ConfigError, DataError
from coreecho_jax.models.coreecho import build_model
from coreecho_jax.models.head import ClassificationHead, RegressionHead
from coreecho_jax.transfer import loop
from tests.paths import REPO

FRAMES, STRIDE, SIZE = 8, 2, 32


def tiny_config():
    config = demo.get_config("quick")
    config.data.frames = FRAMES
    config.data.stride = STRIDE
    config.data.image_size = SIZE
    config.eval.n_clips = 2
    return config


@pytest.fixture(scope="module")
def model():
    m = build_model(tiny_config().model, seed=0)
    m.eval()
    return m


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three synthetic 112 px videos of 30-40 frames with their LV masks (one per split)."""
    root = tmp_path_factory.mktemp("synthetic") / "echonet"
    return write_echonet_dataset(
        root, n_videos=3, min_frames=30, max_frames=40, progress=False, write_masks=True
    )


@pytest.fixture(scope="module")
def batch(dataset):
    """Two evaluation clips [2, 8, 32, 32, 3] of a synthetic video, and the video's file name."""
    name = lv_focus.split_file_names(dataset, "test")[0]
    video = read_video(dataset / "Videos" / f"{name}.avi", color=True).frames
    return clips.make_clips(video, [0, 5], frames=FRAMES, stride=STRIDE, image_size=SIZE), name


@pytest.fixture(scope="module")
def cam(model, batch):
    return gradcam.grad_cam(model, batch[0], 2)


@pytest.fixture(scope="module")
def echonet_run(tmp_path_factory, model):
    """The tiny model saved as a CoReEcho run workdir (config.json + stage-2 best checkpoint)."""
    run = tmp_path_factory.mktemp("echonet") / "run"
    run.mkdir()
    (run / "config.json").write_text(tiny_config().to_json_best_effort())
    checkpoints = RunCheckpoints(run / "checkpoints" / "stage2", async_save=False)
    checkpoints.save_best(1, {"model": model_state_dict(model)}, {"epoch": 0})
    checkpoints.wait()
    checkpoints.close()
    return run


@pytest.fixture(scope="module")
def transfer_runs(tmp_path_factory, echonet_run):
    """Transfer workdirs {"camus", "hmcqu"}: fold 0 of the quick demos probed for one epoch from ``echonet_run``."""
    workdirs = {}
    for task, config_module in (("camus", camus_demo), ("hmcqu", hmcqu_demo)):
        c = config_module.get_config("quick")
        c.transfer.init = str(echonet_run)
        c.probe.epochs = 1
        workdirs[task] = tmp_path_factory.mktemp(task) / "run"
        loop.run_transfer(c, workdirs[task])
    return workdirs


# ----------------------------------------------------------------------------- the map


def test_map_shape_range_and_spatial_variation(cam):
    chex.assert_shape(cam.maps, (2, FRAMES, SIZE, SIZE))
    chex.assert_shape(cam.raw, (2, 4, 4, 4))  # T' = 8 / 2, H' = W' = 32 / 8
    assert not cam.fallback.any() and not cam.blank.any()
    assert cam.maps.min() >= 0.0
    np.testing.assert_allclose(cam.maps.max(axis=(1, 2, 3)), 1.0, rtol=1e-6)
    spatial_std = cam.maps.std(axis=(2, 3))  # [B, T]
    assert (spatial_std > 1e-3).mean() >= 0.75, spatial_std


@nnx.jit
def forward_and_gradient(model, x, direction, eps):
    """Model prediction, split prediction, the gradient at stage 2 and a central difference along ``direction``."""
    activation = gradcam.stage_activation(model, x, 2)
    split = functools.partial(gradcam.prediction_from_stage, model, stage=2)
    grad = jax.grad(lambda a: jnp.sum(split(activation=a)))(activation)
    difference = (
        split(activation=activation + eps * direction).sum()
        - split(activation=activation - eps * direction).sum()
    ) / (2 * eps)
    return model(x)[0], split(activation=activation), activation, grad, difference


def test_split_forward_is_the_model_and_the_map_is_grad_cam_by_hand(model, batch, cam):
    x = jnp.asarray(batch[0])
    direction = jax.random.normal(jax.random.key(1), (2, 4, 4, 4, 32))
    prediction, split, activation, grad, difference = forward_and_gradient(model, x, direction, 1e-2)
    np.testing.assert_allclose(cam.prediction, np.asarray(prediction), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(split), np.asarray(prediction), rtol=1e-5)
    # The gradient is the prediction's: a central finite difference along a random direction.
    np.testing.assert_allclose(float(difference), float(jnp.vdot(grad, direction)), rtol=2e-2)
    # Grad-CAM by hand in numpy: channel weights, ReLU, separable linear interpolation, max scaling.
    a, g = np.asarray(activation, np.float64), np.asarray(grad, np.float64)
    raw = np.maximum(np.einsum("bthwc,bc->bthw", a, g.mean(axis=(1, 2, 3))), 0.0)
    np.testing.assert_allclose(cam.raw, raw, rtol=1e-4, atol=1e-6 * raw.max())

    def interp(x, coords, axis):
        return np.apply_along_axis(lambda v: np.interp(coords, np.arange(len(v)), v), axis, x)

    centres = (np.arange(SIZE) + 0.5) / 8 - 0.5
    maps = interp(interp(interp(raw, np.arange(FRAMES) / 2, 1), centres, 2), centres, 3)
    maps /= maps.max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(cam.maps, maps, atol=1e-5)


def test_upsampling_puts_each_token_at_its_centre():
    t, h, w = np.meshgrid(np.arange(3.0), np.arange(4.0), np.arange(4.0), indexing="ij")
    up_t = np.asarray(gradcam.upsample(jnp.asarray(t)[None], 6, 32, 32, 2))[0, :, 0, 0]
    np.testing.assert_allclose(up_t, [0, 0.5, 1, 1.5, 2, 2])  # frame i at t' = i / 2, clamped
    up_h = np.asarray(gradcam.upsample(jnp.asarray(h)[None], 6, 32, 32, 2))[0, 0, :, 0]
    np.testing.assert_allclose(up_h[:4], 0.0)  # left of token 0's centre (pixel 3.5): clamped
    np.testing.assert_allclose(up_h[4:12], (np.arange(4, 12) + 0.5) / 8 - 0.5)
    np.testing.assert_allclose(up_h[28:], 3.0)


def test_all_negative_evidence_falls_back_to_grad_times_activation_and_zero_stays_blank():
    cam = jnp.zeros((2, 2, 2, 2))
    magnitude = jnp.stack([jnp.arange(8.0).reshape(2, 2, 2), jnp.zeros((2, 2, 2))])
    maps, raw, fallback, blank = gradcam.finish(cam, magnitude, (4, 16, 16), 2)
    assert fallback.tolist() == [True, True] and blank.tolist() == [False, True]
    np.testing.assert_allclose(raw, magnitude)
    assert float(maps[0].max()) == pytest.approx(1.0) and float(maps[0].std()) > 0
    assert not np.asarray(maps[1]).any()  # a blank map stays zero, not a uniform one
    a = jnp.ones((1, 1, 1, 2, 2))
    g = jnp.array([-1.0, -2.0, 3.0, -1.0]).reshape(1, 1, 1, 2, 2)  # weights [-1, -1.5] < 0
    relu, grad_x_act = gradcam.cam_from_gradient(a, g)
    assert not np.asarray(relu).any()
    np.testing.assert_allclose(np.asarray(grad_x_act)[0, 0, 0], [3.0, 2.0])


def test_a_one_token_map_or_an_unknown_stage_is_refused(model, batch):
    with pytest.raises(gradcam.GradCamError, match="1x1 feature map"):
        gradcam.grad_cam(model, batch[0], 4)  # 32 px / 32
    with pytest.raises(ConfigError, match="one of"):
        gradcam.check_stage(5, 64, 64)
    gradcam.check_stage(4, 64, 64)  # a 2x2 map


# ----------------------------------------------------------------------------- LV focus


def test_lv_masks_follow_the_clip_frames_padding_and_resize():
    masks = np.zeros((10, 112, 112), bool)
    for f in range(10):
        masks[f, 4 * f : 4 * f + 4, 0:4] = True  # frame f: a 4x4 block at row 4f
    lv, valid = cam_lv.clip_lv_masks(masks, start=5, frames=4, stride=2, image_size=56, dilation=0)
    chex.assert_shape(lv, (4, 56, 56))
    assert valid.tolist() == [True, True, True, False]  # frames 5, 7, 9, then 11: end padding
    assert not lv[3].any()
    for i, f in enumerate([5, 7, 9]):
        rows = np.flatnonzero(lv[i].any(axis=1))
        assert rows.tolist() == [2 * f, 2 * f + 1]  # 112 -> 56 halves the coordinates
    dilated, _ = cam_lv.clip_lv_masks(masks, 5, 4, 2, 112, dilation=3)
    assert dilated[0].sum() > masks[5].sum() and dilated[0][masks[5]].all()


def test_focus_of_the_mask_is_one_and_of_a_uniform_map_the_area_share():
    rng = np.random.default_rng(0)
    lv = rng.random((4, 16, 16)) < 0.2
    focus, chance = cam_lv.focus_fraction(lv.astype(np.float32), lv)
    assert focus == pytest.approx(1.0) and chance == pytest.approx(lv.mean())
    focus, _ = cam_lv.focus_fraction(np.ones(lv.shape), lv)
    assert focus == pytest.approx(lv.mean())
    valid = np.array([True, True, False, False])
    assert cam_lv.focus_fraction(np.ones(lv.shape), lv, valid)[0] == pytest.approx(lv[:2].mean())
    with pytest.raises(DataError, match="same"):
        cam_lv.focus_fraction(np.ones((2, 3, 3)), lv)


def test_lv_focus_on_synthetic_videos(model, dataset):
    names = lv_focus.split_file_names(dataset, "test")
    out = lv_focus.lv_focus(model, tiny_config(), dataset, names, progress=False)
    assert out["n_videos"] == 1 and out["n_clips"] == 2 and out["stage"] == 2
    assert 0.0 < out["chance_mean"] < 0.5 and 0.0 <= out["focus_mean"] <= 1.0
    assert out["focus_over_chance"] == pytest.approx(out["focus_mean"] / out["chance_mean"])
    masks = read_mask(dataset, names[0])
    assert out["chance_mean"] > masks.mean()  # the dilation grows the region
    per_clip = out["videos"][0]["clips"]
    assert len(per_clip) == 2 and len({c["start"] for c in per_clip}) == 2  # distinct test starts
    assert out["fallback_clips"] == sum(c["fallback"] for c in per_clip) and out["blank_clips"] == 0
    with pytest.raises(DataError, match="write_masks"):
        lv_focus.lv_focus(model, tiny_config(), dataset.parent, names, progress=False)


def test_summary_means_over_videos_and_over_each_kind_of_clip():
    def clip(focus, chance, fallback):
        return {"start": 0, "focus": focus, "chance": chance, "fallback": fallback}

    rows = [
        {"focus": 0.5, "chance": 0.1, "clips": [clip(0.4, 0.1, False), clip(0.6, 0.1, True)]},
        {"focus": 0.1, "chance": 0.3, "clips": [clip(0.1, 0.3, True), clip(float("nan"), 0.3, False)]},
    ]
    out = lv_focus._summarise(rows, stage=2)
    assert out["focus_mean"] == pytest.approx(0.3) and out["chance_mean"] == pytest.approx(0.2)
    assert out["focus_over_chance"] == pytest.approx(1.5) and out["videos_above_chance"] == 1
    assert (out["fallback_clips"], out["blank_clips"]) == (2, 1)
    assert out["gradcam_clips_focus_mean"] == pytest.approx(0.4)
    assert out["fallback_clips_focus_mean"] == pytest.approx(0.35)
    assert out["fallback_clips_chance_mean"] == pytest.approx(0.2)


def test_summary_splits_true_grad_cam_and_fallback_clips_with_counts_and_ratios():
    def clip(focus, chance, fallback):
        return {"start": 0, "focus": focus, "chance": chance, "fallback": fallback}

    rows = [
        {"focus": 0.3, "chance": 0.1, "clips": [clip(0.2, 0.1, False), clip(0.4, 0.1, True)]},
        {"focus": 0.5, "chance": 0.2, "clips": [clip(0.5, 0.2, True), clip(float("nan"), 0.2, True)]},
    ]
    out = lv_focus._summarise(rows)
    assert (out["clips"], out["fallback_clips"], out["blank_clips"]) == (4, 3, 1)
    assert out["fallback_share"] == pytest.approx(0.75)
    assert (out["gradcam_clips_measured"], out["fallback_clips_measured"]) == (
        1,
        2,
    )  # the blank one has no mass
    assert out["gradcam_clips_focus_over_chance"] == pytest.approx(0.2 / 0.1)
    assert out["fallback_clips_focus_mean"] == pytest.approx(0.45)
    assert out["fallback_clips_focus_over_chance"] == pytest.approx(0.45 / 0.15)
    counts = gradcam.cam_counts(np.array([True, False, True, True]), np.array([False, False, True, False]))
    assert counts == {
        "clips": 4,
        "fallback_clips": 3,
        "fallback_share": 0.75,
        "blank_clips": 1,
        "blank_share": 0.25,
    }


def test_batched_grad_cam_pads_the_last_batch_and_keeps_each_clip_s_map(model, batch, cam):
    three = np.concatenate([batch[0], batch[0][:1]])  # batches of 2: the same compiled shape as `cam`
    out = gradcam.grad_cam_batched(model, three, 2, batch_size=2)
    chex.assert_shape(out.maps, (3, FRAMES, SIZE, SIZE))
    np.testing.assert_allclose(out.maps[:2], cam.maps, atol=1e-6)
    np.testing.assert_allclose(out.maps[2], cam.maps[0], atol=1e-6)
    np.testing.assert_allclose(out.prediction, [*cam.prediction, cam.prediction[0]], rtol=1e-6)
    assert out.fallback.shape == out.blank.shape == (3,)
    with pytest.raises(gradcam.GradCamError, match="batch size"):
        gradcam.grad_cam_batched(model, three, 2, batch_size=0)


def test_transfer_clips_are_drawn_back_with_their_own_normalisation():
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, (2, 4, 6, 6), dtype=np.uint8)  # [N, T, S, S] grey, as prepared
    mean, std = (40.94405,) * 3, (54.723774,) * 3  # CAMUS
    x = cycles.normalise(stored, mean, std)
    for i in range(2):
        np.testing.assert_array_equal(figures.clip_frames_uint8(x[i], mean, std), stored[i])
    assert not np.array_equal(figures.clip_frames_uint8(x[0]), stored[0])  # EchoNet's statistics differ


def test_cycle_masks_go_through_the_clip_s_own_crop_resize_and_time_sampling():
    masks = np.zeros((5, 20, 40), bool)
    masks[:, 4:8, 8:16] = True  # rows 4-7, columns 8-15 of a 20 x 40 frame
    masks[4] = False  # the last frame has no LV
    spec = cycles.CycleSpec(frames=4, image_size=10, crop_fraction=1.0, spatial="area", time_sampling="ends")
    lv = cam_lv.cycle_lv_masks(masks, spec, dilation=0)
    chex.assert_shape(lv, (4, 10, 10))
    expected = np.zeros((10, 10), bool)
    expected[2:4, 2:4] = True  # area resize: rows / 2, columns / 4
    for t in range(3):  # frames at 0, 4/3, 8/3 lie between LV frames; frame 4 (the last) has none
        np.testing.assert_array_equal(lv[t], expected)
    assert not lv[3].any()
    cropped = cam_lv.cycle_lv_masks(masks, dataclasses.replace(spec, crop_fraction=0.5), dilation=0)
    expected = np.zeros((10, 10), bool)
    expected[0:3, 0:3] = True  # the centre 10 x 20 window (rows 5-14, columns 10-29), columns halved
    np.testing.assert_array_equal(cropped[0], expected)
    assert cam_lv.clip_dilation(5, 112) == 5 and cam_lv.clip_dilation(5, 224) == 10
    assert cam_lv.clip_dilation(5, 32) == 1 and cam_lv.cycle_lv_masks(masks, spec, 112)[0].all()


# ----------------------------------------------------------------------------- pictures and command


def test_strip_and_movies(tmp_path, batch, cam):
    frames = figures.clip_frames_uint8(batch[0][0])
    chex.assert_shape(frames, (FRAMES, SIZE, SIZE))
    strip = figures.save_strip(tmp_path / "s.png", frames, cam.maps[0], n=4, title="t", dpi=50)
    picture = np.asarray(Image.open(strip).convert("RGB"))
    assert picture.shape[:2] == (round((1.6 + 0.6) * 50), round((4 * 1.6 + 0.6) * 50))
    assert picture.std() > 10  # not blank
    gif = figures.save_movie(tmp_path / "m.gif", frames, cam.maps[0], size=64)
    with Image.open(gif) as image:
        assert image.n_frames == FRAMES and image.size == (64, 64)
    mp4 = figures.save_movie(tmp_path / "m.mp4", frames, cam.maps[0], size=64)
    assert count_frames(mp4, exact=True) == FRAMES
    with pytest.raises(figures.FigureError, match="gif or .mp4"):
        figures.save_movie(tmp_path / "m.avi", frames, cam.maps[0])


@pytest.mark.slow  # restores a run checkpoint, compiles for the restored model: ~50 s when loaded
def test_command_on_a_run_and_a_video(tmp_path, echonet_run, dataset):
    run = echonet_run
    name = lv_focus.split_file_names(dataset, "train")[0]
    video = dataset / "Videos" / f"{name}.avi"
    out = tmp_path / "out"
    report = cli.parse(
        [
            "gradcam",
            "--checkpoint",
            str(run),
            "--video",
            str(video),
            "--out",
            str(out),
            "--lv_focus",
            str(dataset),
            "--clips",
            "2",
        ]
    ).run()
    stage = report["models"][0]["stages"]["2"]
    assert {p.name for p in out.iterdir()} == {
        "gradcam.json",
        f"gradcam_{name}_stage2.png",
        f"gradcam_{name}_stage2.gif",
        f"gradcam_{name}_stage2_clip1.png",
        f"gradcam_{name}_stage2_clip1.gif",
        "lv_focus_stage2.json",
    }
    assert len(stage["prediction"]) == 2 and stage["lv_focus"]["n_videos"] == 1
    assert json.loads((out / "lv_focus_stage2.json").read_text())["videos"][0]["file"]
    expected = cv2.imread(str(out / f"gradcam_{name}_stage2.png"))
    assert expected is not None and expected.std() > 10
    with pytest.raises(gradcam.GradCamError, match="1x1"):
        cli.parse(["gradcam", f"--checkpoint={run}", f"--video={video}", f"--out={out}", "--stage=4"]).run()


@pytest.mark.parametrize("flag", ["--clips", "--max_videos"])
@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_counts_below_one_are_refused_naming_the_flag(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:  # before anything is loaded
        cli.main(
            ["gradcam", f"--checkpoint={tmp_path}", "--video=v.avi", f"--out={tmp_path}", f"{flag}={value}"]
        )
    assert info.value.code == 1
    expected = "expected an integer" if value == "two" else "expected an integer >= 1"
    assert capsys.readouterr().err == f"error: {flag}={value}: {expected}\n"


# ----------------------------------------------------------------------------- transfer folds and Fig. 3


@pytest.mark.slow  # trains two one-epoch transfer probes (module fixture)
def test_grad_cam_of_a_transfer_fold_checkpoint_is_the_model_the_fold_tested(transfer_runs):
    for task, head in (("camus", RegressionHead), ("hmcqu", ClassificationHead)):
        workdir = transfer_runs[task]
        trained = runs.load_run(None, workdir / "folds" / "fold0" / "checkpoints")
        assert (trained.task, trained.fold, trained.workdir) == (task, 0, workdir)
        assert type(trained.model.head) is head and "latest (epoch 0, probe)" in trained.origin
        names, x = lv_focus.transfer_clips(trained)
        result = json.loads((workdir / "folds" / "fold0" / "result.json").read_text())
        tested = {p["name"]: p["output"] for p in result["predictions"]}
        assert sorted(names) == sorted(tested)
        chex.assert_shape(x, (len(names), 8, 32, 32, 3))
        report, cam = lv_focus.transfer_focus(trained, names, x, stage=2)
        chex.assert_shape(cam.maps, (len(names), 8, 32, 32))
        outputs = cam.prediction if task == "camus" else 1 / (1 + np.exp(-cam.prediction))
        # the fold's own clips, normalisation and tested model: Grad-CAM's output is the fold's prediction
        np.testing.assert_allclose(outputs, [tested[n] for n in names], rtol=1e-4, atol=1e-4)
        assert report["clips"] == len(names)
        assert report["fallback_share"] == pytest.approx(cam.fallback.mean())
        assert [v["fallback"] for v in report["videos"]] == cam.fallback.tolist()
        if task == "camus":
            lv = report["lv"]
            assert "lv_undefined" not in report and lv["n_videos"] == len(names) and lv["dilation_px"] == 1
            assert lv["gradcam_clips_measured"] + lv["fallback_clips_measured"] == len(names)
            assert 0 < lv["chance_mean"] < 0.5
        else:
            assert "lv" not in report and "LV wall" in report["lv_undefined"]


@pytest.mark.slow
def test_camus_lv_masks_lie_on_the_dark_cavity_of_the_prepared_clips(transfer_runs):
    trained = runs.load_run(None, transfer_runs["camus"] / "folds" / "fold0")
    names, x = lv_focus.transfer_clips(trained, "train")
    masks, skipped = lv_focus.transfer_lv_masks(trained, names, dilation=0)
    assert skipped == [] and set(masks) == set(names)
    d = trained.config.data
    contrast = []
    for name, clip in zip(names, x, strict=True):
        frames = figures.clip_frames_uint8(clip, d.mean, d.std).astype(float)
        lv = masks[name]
        sector = (frames > 0) & ~lv
        contrast.append(frames[lv].mean() - frames[sector].mean())
    assert np.median(contrast) < -15, contrast  # the blood pool is darker than the tissue around it


@pytest.mark.slow
def test_a_fold_that_did_not_finish_or_tested_another_epoch_is_refused(transfer_runs, tmp_path):
    workdir = tmp_path / "camus"
    shutil.copytree(transfer_runs["camus"], workdir, ignore=shutil.ignore_patterns("synthetic", "prepared"))
    result = workdir / "folds" / "fold0" / "result.json"
    text = result.read_text()
    result.write_text(json.dumps({**json.loads(text), "tested_epoch": 7}))
    with pytest.raises(CheckpointError, match="holds epoch 0, but .* tested epoch 7"):
        runs.load_run(None, workdir / "folds" / "fold0")
    result.unlink()
    with pytest.raises(CheckpointError, match="has not finished"):
        runs.load_run(None, workdir)  # the workdir's only fold
    (workdir / "folds" / "fold3").mkdir()
    with pytest.raises(CheckpointError, match=r"2 folds \(fold0, fold3\); name one"):
        runs.load_run(None, workdir)


@pytest.mark.slow
def test_camus_patients_without_lv_masks_are_listed_and_none_leaves_the_lv_undefined(transfer_runs, tmp_path):
    workdir = tmp_path / "camus"
    shutil.copytree(transfer_runs["camus"], workdir, ignore=shutil.ignore_patterns("prepared"))
    trained = runs.load_run(None, workdir / "folds" / "fold0")
    names, x = lv_focus.transfer_clips(trained)
    gts = {n: next((workdir / "synthetic").rglob(f"{n}_4CH_half_sequence_gt.nii.gz")) for n in names}
    gts[names[0]].unlink()
    report, _ = lv_focus.transfer_focus(trained, names, x)
    assert report["lv"]["n_videos"] == len(names) - 1 and report["clips"] == len(names)
    assert [s["name"] for s in report["lv_skipped"]] == [names[0]]
    assert "no per-frame segmentation" in report["lv_skipped"][0]["reason"]
    for path in gts.values():
        path.unlink(missing_ok=True)
    report, _ = lv_focus.transfer_focus(trained, names, x)
    assert "lv" not in report and report["lv_skipped"] == []
    assert report["lv_undefined"].startswith("no video with LV masks; first: ")
    assert report["fallback_share"] == pytest.approx(report["fallback_clips"] / len(names))


@pytest.mark.slow
def test_fig3_command_draws_the_echonet_camus_and_hmcqu_rows_of_one_encoder(
    transfer_runs, echonet_run, dataset, tmp_path
):
    out = tmp_path / "fig3"
    report = cli.parse(
        [
            "gradcam",
            f"--checkpoint={echonet_run}",
            f"--lv_focus={dataset}",
            f"--checkpoint={transfer_runs['camus']}/folds/fold0/checkpoints",
            f"--checkpoint={transfer_runs['hmcqu']}",  # a transfer workdir with one fold
            "--stage=2,3",
            f"--out={out}",
        ]
    ).run()
    assert [m["task"] for m in report["models"]] == ["echonet", "camus", "hmcqu"]
    assert [m.get("same_encoder_as_first") for m in report["models"]] == [None, True, True]  # probes
    assert report["models"][1]["encoder_from"] == str(echonet_run)
    for model in report["models"]:
        for stage in ("2", "3"):
            entry = model["stages"][stage]
            assert 0 <= entry["fallback_share"] <= 1
            assert entry["fallback_share"] == pytest.approx(entry["fallback_clips"] / entry["clips"])
    assert set(report["models"][1]["stages"]["2"]["lv"]) >= {
        "gradcam_clips_focus_mean",
        "fallback_clips_focus_mean",
        "gradcam_clips_focus_over_chance",
        "fallback_clips_focus_over_chance",
    }
    assert "lv_undefined" in report["models"][2]["stages"]["3"]
    assert json.loads((out / "gradcam.json").read_text())["figure"] == str(out / "fig3.png")
    for folder, name in (("0_echonet", "lv_focus_stage3.json"), ("1_camus", "videos_stage2.json")):
        assert (out / folder / name).is_file()
    assert any(p.name.startswith("gradcam_hmcqu_fold0_ES") for p in (out / "2_hmcqu").glob("*.png"))
    picture = np.asarray(Image.open(out / "fig3.png").convert("RGB"))
    assert picture.shape[:2] == (
        round((6 * 1.3 + 0.5) * 100),
        round((8 * 1.3 + 2.2) * 100),
    )  # 3 models x 2 stages
    assert picture.std() > 10


def test_a_negative_lv_dilation_is_refused_before_anything_is_loaded(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(
            ["gradcam", f"--checkpoint={tmp_path}", "--lv_focus=x", f"--out={tmp_path}", "--dilation=-1"]
        )
    assert info.value.code == 1
    assert capsys.readouterr().err == "error: --dilation=-1: expected a radius >= 0 px\n"


def test_the_command_runs_the_command_module_and_the_figures_load_no_jax(tmp_path):
    """``python -m coreecho_jax gradcam`` runs :mod:`gradcam_cli`; the pictures module (shared with the UMAP
    figure) loads no JAX."""
    command = [sys.executable, "-m", "coreecho_jax", "gradcam", f"--checkpoint={tmp_path}"]
    command += ["--lv_focus=x", f"--out={tmp_path}", "--dilation=-1"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ)
    assert done.returncode == 1
    assert done.stderr == "error: --dilation=-1: expected a radius >= 0 px\n"
    code = "import sys, coreecho_jax.analysis.umap_figure, coreecho_jax.analysis.figures; print('jax' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["False"], done.stderr


@pytest.mark.parametrize(
    ("task", "output"),
    [("custom_regression", "EF"), ("custom_classification", "logit"), ("hmcqu", "MI logit"), ("camus", "EF")],
)
def test_a_cohort_fold_is_a_transfer_fold_with_its_output_named(tmp_path, task, output):
    """Grad-CAM reads a manifest cohort's folds as CAMUS's and HMC-QU's (its task names its head's output)."""
    (tmp_path / "folds" / "fold3").mkdir(parents=True)
    (tmp_path / "config.json").write_text(json.dumps({"task": task}))
    assert runs.find_fold(tmp_path / "folds" / "fold3") == (tmp_path, 3)
    assert runs.find_fold(tmp_path) == (tmp_path, 3)
    assert runs.TrainedModel(None, None, "", tmp_path, task).output == output
    if task.startswith("custom"):
        assert lv_focus.LV_UNDEFINED[task] == "not defined: a manifest cohort has no LV masks"
