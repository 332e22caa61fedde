"""The inference layer: ``load_run`` (one loader for every caller) and ``clips_for_video`` (one preparation
of a user's video, shared by predict and Grad-CAM)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coreecho_jax import cli, predict
from coreecho_jax.data import clips
from coreecho_jax.data.video.video_io import load_echo_video, write_video
from coreecho_jax.errors import CheckpointError, ConfigError
from coreecho_jax.inference import runs, video_clips
from tests.data.test_video_io import echo_like, smooth_frames
from tests.inference.test_predict import tiny_config

# ----------------------------------------------------------------------------- clips_for_video


def test_clips_for_video_crops_a_foreign_frame_and_spreads_k_even_starts(tmp_path):
    frames, _ = echo_like(t=40)  # 120 x 160 with a sector, text and an ECG line
    path = write_video(tmp_path / "echo.avi", frames, fps=50.0)
    prepared = video_clips.clips_for_video(tiny_config(), path, 3)
    assert prepared.path == path and prepared.video.metadata["crop_mode"] == "sector"
    assert prepared.spec == clips.ClipSpec.from_config(tiny_config().data)
    # 40 frames, clips of 8 at stride 2: starts 0..26; three spread evenly (12.5 rounds to even)
    np.testing.assert_array_equal(prepared.starts, [0, 12, 25])
    video = load_echo_video(path, crop="auto", channels=3)
    np.testing.assert_array_equal(prepared.video.frames, video.frames)
    expected = clips.make_clips(video.frames, [0, 12, 25], frames=8, stride=2, image_size=32)
    np.testing.assert_array_equal(prepared.clips, expected)
    assert prepared.clips.shape == (3, 8, 32, 32, 3) and prepared.notes == []


def test_clips_for_video_leaves_a_112_square_uncropped_and_notes_a_short_loop(tmp_path):
    path = write_video(tmp_path / "square.avi", smooth_frames(24, 112, 112), fps=50.0)
    config = tiny_config()
    config.data.frames = 16  # a span of 32 frames; one cycle at 150 bpm and 50 fps is 20
    prepared = video_clips.clips_for_video(config, path, 2)
    assert prepared.video.metadata["crop_mode"] == "none"
    np.testing.assert_array_equal(
        prepared.video.frames, load_echo_video(path, crop="none", channels=3).frames
    )
    np.testing.assert_array_equal(prepared.starts, [0, 1])  # 24 frames padded to 32: starts 0..1
    assert prepared.notes == [
        "the video has 24 frames, fewer than one clip span (32); it was padded with black frames as in training"
    ]


# ----------------------------------------------------------------------------- load_run


def test_a_pth_without_a_config_and_a_clip_setting_against_the_run_are_refused(tmp_path):
    pth = tmp_path / "best.pth"
    pth.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"best.pth: not a run workdir \(no config.json\); give the config"):
        runs.load_run(None, pth)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(tiny_config().to_json_best_effort())
    given = tiny_config()
    given.data.frames = 16
    with pytest.raises(ConfigError, match=r"data.frames=8 \(the given config has 16\)"):
        runs.load_run(given, run)


def test_a_transfer_workdir_without_its_loader_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "_LOADERS", [])  # as in a process that imported no analysis module
    (tmp_path / "config.json").write_text(json.dumps({"task": "camus"}))
    with pytest.raises(CheckpointError) as info:
        runs.load_run(None, tmp_path)
    assert str(info.value) == (
        f"{tmp_path}: a camus transfer workdir, not a CoReEcho run; its folds are read by Grad-CAM "
        f"(coreecho gradcam --checkpoint={tmp_path}/folds/fold<k>)"
    )


def test_registered_loaders_are_asked_first_and_once(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "_LOADERS", [])
    asked = []
    mine = tmp_path / "mine"
    sentinel = runs.TrainedModel(None, tiny_config(), "mine", mine, "camus")

    def loader(config, source):
        asked.append(source)
        return sentinel if source == mine else None

    runs.register_loader(loader)
    runs.register_loader(loader)
    assert runs.load_run(None, mine) is sentinel and asked == [mine]
    with pytest.raises(ConfigError, match="not a run workdir"):  # not its kind: the EchoNet path
        runs.load_run(None, tmp_path / "other.pth")
    assert asked == [mine, tmp_path / "other.pth"]


# ----------------------------------------------------------------------------- predict and Grad-CAM


@pytest.fixture(scope="module")
def run_with_weights(tmp_path_factory):
    from coreecho_jax.checkpoints.manager import RunCheckpoints, model_state_dict
    from coreecho_jax.models.coreecho import build_model

    run = tmp_path_factory.mktemp("run")
    (run / "config.json").write_text(tiny_config().to_json_best_effort(indent=2))
    ckpts = RunCheckpoints(run / "checkpoints" / "stage2", async_save=False)
    ckpts.save_best(1, {"model": model_state_dict(build_model(tiny_config().model, seed=0))}, {"epoch": 0})
    ckpts.wait()
    ckpts.close()
    return run


@pytest.mark.slow  # a prediction and a Grad-CAM of a tiny model: ~30 s on a busy machine
def test_predict_and_grad_cam_prepare_the_same_clips_through_clips_for_video(
    run_with_weights, tmp_path, monkeypatch
):
    frames, _ = echo_like(t=40)
    video = write_video(tmp_path / "echo.avi", frames, fps=50.0)
    made = []
    real = video_clips.clips_for_video

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(video_clips, "clips_for_video", spy)
    out = predict.predict_file(tiny_config(), video, run_with_weights)
    report = cli.parse(
        ["gradcam", f"--checkpoint={run_with_weights}", f"--video={video}", f"--out={tmp_path / 'cam'}"]
        + ["--clips=3", "--stage=2"]
    ).run()
    assert len(made) == 2
    by_predict, by_gradcam = made
    np.testing.assert_array_equal(by_predict.clips, by_gradcam.clips)
    np.testing.assert_array_equal(by_predict.starts, by_gradcam.starts)
    assert out["clip_starts"] == [0, 12, 25] == by_gradcam.starts.tolist()
    # the same model on the same clips: Grad-CAM explains the EF predict reports, clip by clip
    prediction = report["models"][0]["stages"]["2"]["prediction"]
    np.testing.assert_allclose(prediction, out["ef_per_clip"], rtol=1e-5, atol=1e-4)
