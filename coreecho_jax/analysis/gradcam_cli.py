"""The Grad-CAM command: maps, pictures and LV-focus numbers of one or several trained models.

Command line (its flags: :mod:`coreecho_jax.commands.analysis`)::

    coreecho gradcam --checkpoint=RUN_OR_PTH --video=FILE --out=DIR [--stage=2,4]
    coreecho gradcam --checkpoint=RUN --lv_focus=DATASET_ROOT --out=DIR
    coreecho gradcam --checkpoint=TRANSFER_WORKDIR/folds/fold0 --out=DIR
    coreecho gradcam --checkpoint=RUN --lv_focus=ROOT \
        --checkpoint=CAMUS_WORKDIR/folds/fold0 --checkpoint=HMCQU_WORKDIR/folds/fold0 --stage=2,3,4 --out=DIR

writes ``gradcam_<video>_stage<s>.png`` (a strip of evenly spaced frames with the map overlaid) and
``.gif`` (or ``.mp4``) of the model's example clip, with ``--lv_focus`` the LV-focus numbers of
:mod:`.lv_focus` to ``lv_focus_stage<s>.json`` (a transfer fold: its videos to
``videos_stage<s>.json``), and ``gradcam.json``: per model and stage the fallback share and the LV
numbers. With several ``--checkpoint`` (Fig. 3: the EchoNet run and the CAMUS and HMC-QU folds that
started from it) each model writes into ``DIR/<row>_<task>/`` and ``fig3.png`` shows one row per
model and stage: its example clip's frames with the map.

An EchoNet model (a CoReEcho run, ``.pth`` or imported folder) explains the clips of a video file
(``--video``, cut as ``predict`` cuts them: :func:`video_clips`) and/or of a synthetic EchoNet set
(``--lv_focus``); a transfer fold the prepared clips of a part of its fold (``--split``). The maps are
:mod:`.gradcam`'s, the pictures :mod:`.figures`', the LV numbers :mod:`.lv_focus`'.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from coreecho_jax import logs
from coreecho_jax.analysis import figures, gradcam, lv_focus, runs
from coreecho_jax.inference import video_clips


def same_encoder(a: nnx.Module, b: nnx.Module) -> bool:
    """Whether two CoReEcho models hold the same encoder, bit for bit (parameters and BatchNorm statistics)."""
    from coreecho_jax.checkpoints.manager import model_state_dict

    left = jax.tree_util.tree_leaves_with_path(model_state_dict(a)["encoder"])
    right = jax.tree_util.tree_leaves_with_path(model_state_dict(b)["encoder"])
    return len(left) == len(right) and all(
        pa == pb and np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y))
        for (pa, x), (pb, y) in zip(left, right, strict=True)
    )


# ------------------------------------------------------------------------------------------- the command


@dataclasses.dataclass(frozen=True)
class GradCamOptions:
    """What ``coreecho gradcam`` was asked (the flags of :mod:`coreecho_jax.commands.analysis`).

    Attributes:
        checkpoint: run workdirs, imported folders, CoReEcho ``.pth`` files or transfer folds
            (``WORKDIR/folds/fold<k>``): one figure row per model.
        out: the output folder.
        video: EchoNet models: the AVI/MP4/DICOM file to explain.
        stage: encoder stage(s), comma-separated (``"2,3,4"``).
        clips: evenly spaced clips of the video (pictures of each), >= 1.
        movie: ``"gif"`` or ``"mp4"``.
        sign: 1, or -1 for the evidence for a lower output.
        lv_focus: EchoNet models: a synthetic dataset root with ``masks/`` (CAM mass in the LV).
        split: the split of ``lv_focus``; for a transfer fold its part (train, val, test).
        dilation: LV dilation radius in px of the 112 px frame, >= 0.
        max_videos: the first N videos of the split only (None: all).
    """

    checkpoint: tuple[str, ...]
    out: str
    video: str | None = None
    stage: str = str(gradcam.DEFAULT_STAGE)
    clips: int = 1
    movie: str = "gif"
    sign: float = 1.0
    lv_focus: str | None = None
    split: str = "test"
    dilation: int = 5
    max_videos: int | None = None


#: Row labels of the figure, per task (the paper's Fig. 3 names the datasets).
TASK_LABELS = {"echonet": "EchoNet-Dynamic", "camus": "CAMUS", "hmcqu": "HMC-QU"}


def _model_label(trained: runs.TrainedModel) -> str:
    label = TASK_LABELS.get(trained.task, trained.task)  # a cohort's task by its name
    return label if trained.fold is None else f"{label} fold {trained.fold}"


def _explain_echonet(
    a: GradCamOptions, trained: runs.TrainedModel, out: Path, stage: int
) -> tuple[dict, figures.FigureRow]:
    """One EchoNet model at one stage: pictures of ``--video``'s clips and/or ``--lv_focus``; the figure row."""
    config = trained.config
    entry: dict = {}
    row = None
    if a.video is not None:
        prepared = video_clips.clips_for_video(config, a.video, a.clips)  # as predict prepares it
        x, starts = prepared.clips, prepared.starts
        cam = gradcam.grad_cam(trained.model, x, stage, sign=a.sign)
        stride = int(config.data.stride)
        entry["pictures"] = [
            figures.write_pictures(
                out,
                a.video,
                figures.clip_frames_uint8(x[k]),
                cam,
                k,
                a.movie,
                frame_labels=int(starts[k]) + stride * np.arange(x.shape[1]),  # the video's frames
            )
            for k in range(len(x))
        ]
        entry["prediction"] = cam.prediction.tolist()
        entry["fallback"] = cam.fallback.tolist()
        entry.update(gradcam.cam_counts(cam.fallback, cam.blank))
        row = figures.FigureRow(
            f"{_model_label(trained)}\n{Path(a.video).name}", figures.clip_frames_uint8(x[0]), cam.maps[0]
        )
    if a.lv_focus is not None:
        names = lv_focus.split_file_names(a.lv_focus, a.split)[: a.max_videos]
        focus = lv_focus.lv_focus(
            trained.model, config, a.lv_focus, names, stage=stage, dilation=a.dilation, sign=a.sign
        )
        path = out / f"lv_focus_stage{stage}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(focus, indent=2) + "\n")
        entry["lv_focus"] = {k: v for k, v in focus.items() if k != "videos"}
        entry.update({k: focus[k] for k in ("clips", "fallback_clips", "fallback_share", "blank_clips")})
        if a.video is None:  # the figure shows the first video's first test clip
            _, _, x = lv_focus.eval_clips(config, a.lv_focus, names[0], 1)
            cam = gradcam.grad_cam(trained.model, x, stage, sign=a.sign)
            row = figures.FigureRow(
                f"{_model_label(trained)}\n{names[0]}", figures.clip_frames_uint8(x[0]), cam.maps[0]
            )
    return entry, row


def _explain_transfer(
    a: GradCamOptions, trained: runs.TrainedModel, out: Path, stage: int, data: tuple
) -> tuple[dict, figures.FigureRow]:
    """One transfer fold at one stage: every video of ``--split``, pictures of the first; the figure row."""
    names, x, lv = data
    d = trained.config.data
    entry, cam = lv_focus.transfer_focus(
        trained, names, x, stage=stage, dilation=a.dilation, sign=a.sign, lv=lv
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"videos_stage{stage}.json").write_text(json.dumps(entry, indent=2) + "\n")
    entry = {k: v for k, v in entry.items() if k != "videos"}
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{trained.task}_fold{trained.fold}_{names[0]}")  # ids hold spaces
    frames = figures.clip_frames_uint8(x[0], d.mean, d.std)  # the fold's own normalisation undone
    entry["pictures"] = [figures.write_pictures(out, stem, frames, cam, 0, a.movie, output=trained.output)]
    return entry, figures.FigureRow(f"{_model_label(trained)}\n{names[0]}", frames, cam.maps[0])


def check_options(a: GradCamOptions) -> list[int]:
    """The stages ``a`` asks for, after checking ``a`` before anything is loaded: a GradCamError for an
    unknown stage, a bad count, radius, sign or movie, or an EchoNet model with nothing to explain."""
    counts = {"clips": a.clips, "max_videos": a.max_videos}
    problems = [f"--{k}={v}: expected an integer >= 1" for k, v in counts.items() if v is not None and v < 1]
    if a.dilation < 0:
        problems.append(f"--dilation={a.dilation}: expected a radius >= 0 px")
    if a.sign not in (1.0, -1.0):
        problems.append(f"--sign={a.sign:g}: expected 1 or -1")
    if problems:
        raise gradcam.GradCamError("\n".join(problems))
    try:
        stages = [int(s) for s in a.stage.split(",")]
    except ValueError:
        raise gradcam.GradCamError(
            f"--stage={a.stage}: expected stage numbers 1-4, comma-separated"
        ) from None
    for stage in stages:
        gradcam.check_stage(stage, 10**6, 10**6)  # an unknown stage, before loading anything
    if a.video is None and a.lv_focus is None and any(runs.find_fold(c) is None for c in a.checkpoint):
        raise gradcam.GradCamError("an EchoNet model needs --video=FILE and/or --lv_focus=DATASET_ROOT")
    return stages


def _explain_model(
    a: GradCamOptions,
    trained: runs.TrainedModel,
    first: runs.TrainedModel | None,
    out: Path,
    stages: Sequence[int],
) -> tuple[dict, dict[int, figures.FigureRow]]:
    """One model at every stage: its ``gradcam.json`` entry and its figure row per stage (labelled with the
    stage). ``first``: the first model of several (its encoder is compared), else None."""
    entry: dict = {
        "checkpoint": trained.origin,
        "task": trained.task,
        "fold": trained.fold,
        "output": trained.output,
        "stages": {},
    }
    if trained.fold is not None:
        entry["encoder_from"] = str(trained.config.transfer.init) or "random initialisation (scratch)"
        entry["mode"] = str(trained.config.transfer.mode)
        names, x = lv_focus.transfer_clips(trained, a.split, max_videos=a.max_videos)
        data = (names, x, lv_focus.transfer_lv_masks(trained, names, a.dilation))  # read once for every stage
    if first is not None:
        entry["same_encoder_as_first"] = same_encoder(trained.model, first.model)
    rows = {}
    for stage in stages:
        logs.say(f"Grad-CAM of {trained.origin}, stage {stage}")
        if trained.fold is None:
            result, row = _explain_echonet(a, trained, out, stage)
        else:
            result, row = _explain_transfer(a, trained, out, stage, data)
        entry["stages"][str(stage)] = result
        rows[stage] = dataclasses.replace(row, label=f"{row.label}\nstage {stage}")
    return entry, rows


def run(a: GradCamOptions, given: ml_collections.ConfigDict | None = None) -> dict:
    """``coreecho gradcam --checkpoint=... [--checkpoint=...] --out=DIR`` (module doc): writes the pictures,
    ``gradcam.json`` and, for several models, ``fig3.png``; prints and returns the report. ``given``: the
    ``--config`` (default: each run's own config.json)."""
    stages = check_options(a)
    models = [runs.load_run(given, c) for c in a.checkpoint]
    for trained in models:  # before computing anything
        size = int(trained.config.data.image_size)
        for stage in stages:
            gradcam.check_stage(stage, size, size)
    out = Path(a.out)
    several = len(models) > 1
    report: dict = {"stages": stages, "models": []}
    figure_rows: dict[int, list[figures.FigureRow]] = {stage: [] for stage in stages}
    for i, trained in enumerate(models):
        folder = out / f"{i}_{trained.task}" if several else out
        entry, rows = _explain_model(a, trained, models[0] if i > 0 else None, folder, stages)
        report["models"].append(entry)
        for stage in stages:
            figure_rows[stage].append(rows[stage])
    if several:
        rows = [row for stage in stages for row in figure_rows[stage]]  # stage by stage, the models in order
        title = "Grad-CAM (jet: 0 to 1 per clip)"
        report["figure"] = str(figures.save_rows(out / "fig3.png", rows, title=title))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gradcam.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report
