"""predict: what is refused (still images, too short loops), fps warnings, and the run's own clip settings.

A tiny fake run workdir (``config.json`` + a best checkpoint of a randomly initialised tiny model) stands
in for a trained run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import warnings

import cv2
import numpy as np
import pytest

from configs import demo, echonet
from coreecho_jax import predict
from coreecho_jax.checkpoints.manager import RunCheckpoints, model_state_dict
from coreecho_jax.checkpoints.saved_config import inference_config
from coreecho_jax.data.clips import ClipSpec
from coreecho_jax.data.video.video_io import load_echo_video, write_video
from coreecho_jax.data.video.video_types import NotAnEchoVideoError, Video
from coreecho_jax.errors import ConfigError, DataError
from coreecho_jax.evaluation import conformal
from coreecho_jax.evaluation.evaluator import model_fingerprint
from coreecho_jax.models.coreecho import build_model
from tests.data.test_video_io import echo_like, make_dicom, smooth_frames


def tiny_config():
    config = demo.get_config()
    config.data.frames = 8
    config.data.stride = 2
    config.data.image_size = 32
    config.data.channels = 3  # RGB (the default of configs that have the field)
    return config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run workdir as training leaves it, without its checkpoints: config.json."""
    workdir = tmp_path_factory.mktemp("run")
    (workdir / "config.json").write_text(tiny_config().to_json_best_effort(indent=2))
    return workdir


@pytest.fixture(scope="module")
def trained_run_dir(run_dir):
    """The run workdir with checkpoints/stage2/best of a randomly initialised tiny model."""
    model = build_model(tiny_config().model, seed=0)
    ckpts = RunCheckpoints(run_dir / "checkpoints" / "stage2", async_save=False)
    ckpts.save_best(1, {"model": model_state_dict(model)}, {"epoch": 0})
    ckpts.wait()
    ckpts.close()
    return run_dir


@pytest.fixture(scope="module")
def echo_avi(tmp_path_factory):
    frames, _ = echo_like(t=40)
    return write_video(tmp_path_factory.mktemp("videos") / "echo.avi", frames, fps=50.0)


# ----------------------------------------------------------------------------- the run's clip settings


def test_run_config_is_used_and_a_disagreeing_config_is_refused(run_dir):
    given = echonet.get_config()  # 36 frames at stride 4, 112 px, UniFormer-S
    with pytest.raises(ConfigError) as info:
        inference_config(given, run_dir)
    message = str(info.value)
    assert str(run_dir) in message
    for text in (
        "data.frames=8 (the given config has 36)",
        "data.stride=2 (the given config has 4)",
        "data.image_size=32 (the given config has 112)",
    ):
        assert text in message
    assert "\n" not in message
    assert given.data.frames == 36  # not changed


def test_agreeing_config_takes_the_run_model_and_keeps_runtime_switches(run_dir):
    given = tiny_config()
    given.model.preset = "small"  # the model is the run's, whatever the given config says
    given.model.remat = True
    del given.data["image_size"]  # a field the given config lacks comes from the run
    out = inference_config(given, run_dir)
    assert (out.data.frames, out.data.stride, out.data.image_size) == (8, 2, 32)
    assert out.model.preset == "tiny" and out.model.remat is True
    assert out.data.root == given.data.root and out.eval.n_clips == given.eval.n_clips


def test_old_run_without_channels_was_grey_and_pth_uses_the_given_config(run_dir, tmp_path):
    old = tmp_path / "old_run"
    old.mkdir()
    saved = json.loads((run_dir / "config.json").read_text())
    saved["data"].pop("channels", None)
    (old / "config.json").write_text(json.dumps(saved))
    given = tiny_config()
    given.data.channels = 3
    assert inference_config(given, old).data.channels == 1
    pth = tmp_path / "best.pth"
    pth.write_bytes(b"")
    out = inference_config(echonet.get_config(), pth)
    assert out.data.frames == 36 and out.to_dict() == echonet.get_config().to_dict()


@pytest.mark.slow  # builds and runs a (tiny) model: ~10 s alone, more on a busy machine
def test_predict_with_the_run_and_refusal_of_the_echonet_config(trained_run_dir, echo_avi):
    run_dir = trained_run_dir
    out = predict.predict_file(tiny_config(), echo_avi, run_dir)
    assert out["clip"] == {"frames": 8, "stride": 2, "image_size": 32, "channels": 3}
    assert len(out["ef_per_clip"]) == 3 and np.isfinite(out["ef_mean"])
    assert out["crop"] == "sector" and out["num_frames"] == 40
    with pytest.raises(ConfigError, match="data.frames=8 .the given config has 36"):
        predict.predict_file(echonet.get_config(), echo_avi, run_dir)


@pytest.mark.slow  # three predictions of a (tiny) model
def test_predict_gives_the_calibrated_interval_of_its_own_weights_only(trained_run_dir, echo_avi, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run_dir, run)
    out = predict.predict_file(tiny_config(), echo_avi, run)
    assert "ef_interval" not in out and "interval_level" not in out
    assert out["summary"] == f"EF {out['ef_mean']:.0f}"
    assert f"no EF interval: no calibration.json in {run}" in out["notes"]
    ef, spread = out["ef_mean"], out["ef_std"]
    assert out["ef_category"] == ("reduced", "mildly_reduced", "normal")[(ef >= 40) + (ef >= 50)]

    weights = model_fingerprint(build_model(tiny_config().model, seed=0))  # what the run's checkpoint holds
    calibration = conformal.Calibration(
        level=0.9, n=(12, 12, 12), quantiles=(2.0, 3.0, 4.0), clips_per_video=3, weights_sha256=weights
    )
    calibration.save(run / "calibration.json")
    out = predict.predict_file(tiny_config(), echo_avi, run)
    assert (out["ef_mean"], out["ef_std"]) == (ef, spread)  # the point prediction is unchanged
    lo, hi = calibration.interval(ef, spread)
    assert out["ef_interval"] == [float(lo), float(hi)] and lo < ef < hi
    assert out["interval_level"] == 0.9 and out["calibration"] == str(run / "calibration.json")
    assert out["summary"] == f"EF {ef:.0f} [{math.floor(lo)}, {math.ceil(hi)}] (90 %)"
    assert not any("EF interval" in note for note in out["notes"])

    dataclasses.replace(calibration, weights_sha256="0" * 64).save(run / "calibration.json")
    out = predict.predict_file(tiny_config(), echo_avi, run)
    assert "ef_interval" not in out and out["summary"] == f"EF {ef:.0f}"
    assert any(
        note.startswith("no EF interval: ") and "fitted for other weights" in note for note in out["notes"]
    )


# ----------------------------------------------------------------------------- refusals


def test_min_frames_rule():
    assert (
        predict.min_frames(50.0, ClipSpec(frames=36, stride=4)) == 20
    )  # one cycle at 150 bpm: 0.4 s at 50 fps
    assert predict.min_frames(30.0, ClipSpec(frames=36, stride=4)) == 12
    assert predict.min_frames(None, ClipSpec(frames=36, stride=4)) == 20  # unknown fps counts as 50
    assert (
        predict.min_frames(500.0, ClipSpec(frames=36, stride=4)) == 144
    )  # a whole clip span is always enough
    assert predict.min_frames(50.0, ClipSpec(frames=2, stride=2)) == 4


@pytest.mark.parametrize("name", ["still.png", "still_png_renamed.avi"])
def test_png_image_is_refused(run_dir, tmp_path, name):
    frames, _ = echo_like(t=1)
    png = tmp_path / "still.png"
    assert cv2.imwrite(str(png), frames[0])
    path = tmp_path / name
    if path != png:
        shutil.copy(png, path)
    with pytest.raises(
        NotAnEchoVideoError, match=rf"{name}: a still image \(1 frame\), not an echo loop"
    ) as info:
        predict.predict_file(tiny_config(), path, run_dir)
    assert isinstance(info.value, DataError)


def test_single_frame_dicom_is_refused(run_dir, tmp_path):
    frames, _ = echo_like(t=1)
    path = make_dicom(tmp_path / "single.dcm", frames, photometric="MONOCHROME2", FrameTime=20.0)
    with pytest.raises(NotAnEchoVideoError, match=r"single.dcm: a still image \(1 frame\).*at 50.0 fps"):
        predict.predict_file(tiny_config(), path, run_dir)


def test_repeated_picture_is_refused(run_dir, tmp_path):
    frames, _ = echo_like(t=1)
    path = write_video(tmp_path / "frozen.avi", np.repeat(frames, 30, axis=0), fps=50.0)
    with pytest.raises(NotAnEchoVideoError, match="frozen.avi: all 30 frames show the same picture"):
        predict.predict_file(tiny_config(), path, run_dir)


def test_too_short_loop_is_refused_with_the_rule_and_fps(run_dir, tmp_path):
    frames, _ = echo_like(t=12)
    path = write_video(tmp_path / "short.avi", frames, fps=50.0)
    with pytest.raises(NotAnEchoVideoError) as info:
        predict.predict_file(tiny_config(), path, run_dir)
    message = str(info.value)
    assert (
        "short.avi: 12 frames (0.24 s) are too few to hold a cardiac cycle; EF needs at least 16" in message
    )
    assert "at 50.0 fps" in message and "8 x 2 = 16" in message


def test_fps_far_from_training_warns(tmp_path):
    frames, _ = echo_like(t=40)
    path = write_video(tmp_path / "slow.avi", frames, fps=25.0)
    video = load_echo_video(path)
    with pytest.warns(UserWarning, match="slow.avi: 25.0 fps is far from the training data's ~50 fps"):
        notes = predict.check_echo_loop(video, ClipSpec(frames=8, stride=2))
    assert any("target_fps=50" in note for note in notes)
    near = Video(video.frames, 45.0, video.path, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert predict.check_echo_loop(near, ClipSpec(frames=8, stride=2)) == []


def test_moving_video_passes(tmp_path):
    video = Video(smooth_frames(20, 16, 16), 50.0, tmp_path / "x.avi", {})
    assert predict.check_echo_loop(video, ClipSpec(frames=8, stride=2)) == []
