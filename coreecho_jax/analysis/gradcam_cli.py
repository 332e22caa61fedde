"""The Grad-CAM command: maps, pictures and LV-focus numbers of one or several trained models.

Command line::

    python -m coreecho_jax.analysis.gradcam --checkpoint=RUN_OR_PTH --video=FILE --out=DIR [--stage=2,4]
    python -m coreecho_jax.analysis.gradcam --checkpoint=RUN --lv_focus=DATASET_ROOT --out=DIR
    python -m coreecho_jax.analysis.gradcam --checkpoint=TRANSFER_WORKDIR/folds/fold0 --out=DIR
    python -m coreecho_jax.analysis.gradcam --checkpoint=RUN --lv_focus=ROOT \
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
:mod:`.gradcam`'s, the pictures :mod:`.figures`', the LV numbers :mod:`.lv_focus`'. The command line
is ``python -m coreecho_jax.analysis.gradcam`` (which runs this module) or
``python -m coreecho_jax.analysis.gradcam_cli``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from coreecho_jax import logs
from coreecho_jax.analysis import figures, gradcam, lv_focus, runs
from coreecho_jax.errors import ConfigError, CoreEchoError
from coreecho_jax.inference import video_clips

#: The command line (``analysis/gradcam.py`` runs this module as ``__main__``).
PROG = "python -m coreecho_jax.analysis.gradcam"


def load_config(spec: str) -> ml_collections.ConfigDict:
    """The config of a ``configs/*.py[:variant]`` file (``--config``)."""
    file, _, variant = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_gradcam_config", file)
    if module_spec is None or not Path(file).is_file():
        raise ConfigError(f"--config={spec}: {file} is not a config file (configs/*.py)")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant or None) if variant else module.get_config()


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


def _count(text: str) -> int:
    """An argparse type: an integer >= 1 (argparse names the flag in its error line)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


#: Row labels of the figure, per task (the paper's Fig. 3 names the datasets).
TASK_LABELS = {"echonet": "EchoNet-Dynamic", "camus": "CAMUS", "hmcqu": "HMC-QU"}


def _model_label(trained: runs.TrainedModel) -> str:
    label = TASK_LABELS[trained.task]
    return label if trained.fold is None else f"{label} fold {trained.fold}"


def _explain_echonet(
    a: argparse.Namespace, trained: runs.TrainedModel, out: Path, stage: int
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
    a: argparse.Namespace, trained: runs.TrainedModel, out: Path, stage: int, data: tuple
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        help="run workdir, imported folder, CoReEcho .pth or transfer fold (WORKDIR/folds/fold<k>); "
        "repeat it for one figure row per model (Fig. 3: the EchoNet run, a CAMUS and an HMC-QU fold)",
    )
    p.add_argument("--config", default=None, help="configs/FILE.py[:variant]; default: the run's config.json")
    p.add_argument("--video", default=None, help="EchoNet models: AVI/MP4/DICOM file to explain")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "-v", "--verbosity", type=int, default=0, help="1: library INFO logs, 2: DEBUG (default 0: quiet)"
    )
    p.add_argument(
        "--stage",
        default=str(gradcam.DEFAULT_STAGE),
        help="encoder stage(s), comma-separated, e.g. 2,3,4 (module doc)",
    )
    p.add_argument(
        "--clips", type=_count, default=1, help="evenly spaced clips of the video (pictures of each)"
    )
    p.add_argument("--movie", choices=("gif", "mp4"), default="gif")
    p.add_argument(
        "--sign", type=float, choices=(1.0, -1.0), default=1.0, help="-1: evidence for a lower output"
    )
    p.add_argument(
        "--lv_focus",
        default=None,
        help="EchoNet models: synthetic dataset root with masks/: CAM mass in the LV",
    )
    p.add_argument(
        "--split", default="test", help="split of --lv_focus; for a transfer fold its part (train, val, test)"
    )
    p.add_argument("--dilation", type=int, default=5, help="LV dilation radius in px of the 112 px frame")
    p.add_argument("--max_videos", type=_count, default=None, help="first N videos of the split only")
    return p


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[int]]:
    """The command's arguments and its stages, checked before anything is loaded (argparse exits with
    status 2 on a bad flag; an unknown stage is a :class:`GradCamError`)."""
    p = _parser()
    a = p.parse_args(argv)
    if a.dilation < 0:
        p.error(f"argument --dilation: expected a radius >= 0 px, got {a.dilation}")
    try:
        stages = [int(s) for s in a.stage.split(",")]
    except ValueError:
        raise gradcam.GradCamError(
            f"--stage={a.stage}: expected stage numbers 1-4, comma-separated"
        ) from None
    for stage in stages:
        gradcam.check_stage(stage, 10**6, 10**6)  # an unknown stage, before loading anything
    if a.video is None and a.lv_focus is None and any(runs.find_fold(c) is None for c in a.checkpoint):
        p.error("an EchoNet model needs --video=FILE and/or --lv_focus=DATASET_ROOT")
    return a, stages


def _explain_model(
    a: argparse.Namespace,
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


def main(argv: Sequence[str] | None = None, *, configure_logs: bool = False) -> dict:
    """``python -m coreecho_jax.analysis.gradcam --checkpoint=... [--checkpoint=...] --out=DIR`` (module doc);
    ``configure_logs``: set up the process's log (:func:`logs.configure` at ``--verbosity``), as the
    command line does. Ends with the ``wrote: ...`` line (:func:`logs.closing`)."""
    a, stages = parse_args(argv)
    if configure_logs:
        logs.configure(a.verbosity)
    with logs.closing(a.out):
        return _run(a, stages)


def _run(a: argparse.Namespace, stages: list[int]) -> dict:
    given = load_config(a.config) if a.config else None
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


if __name__ == "__main__":
    try:
        main(configure_logs=True)
    except CoreEchoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
