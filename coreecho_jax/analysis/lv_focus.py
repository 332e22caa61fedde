"""Does the Grad-CAM look at the left ventricle? The LV-focus experiment, per model and stage.

Each model sees the clips of the config that trained it (models: anything
:func:`coreecho_jax.analysis.runs.load_run` loads):

* :func:`lv_focus`: an EchoNet model (a CoReEcho run, ``.pth`` or imported folder) on a synthetic
  EchoNet set written with its LV masks, at the clips the test evaluation draws (:func:`eval_clips`):
  the CAM mass inside the dilated LV per clip, per video and overall, beside the chance level.
* :func:`transfer_focus`: a transfer fold (CAMUS: the predicted EF; HMC-QU: the MI logit) on the
  prepared clip of each video of a part of its fold (:func:`transfer_clips`: one clip per video, the
  fold's own preparation, ``transfer.data.prepare`` in the transfer workdir from its cache, and
  normalisation, ``data.mean``/``data.std``): the fallback share, and where the dataset segments the
  LV (CAMUS, :func:`transfer_lv_masks`) the same numbers; HMC-QU's are undefined (:data:`LV_UNDEFINED`).

The measure (masks onto a clip, focus and chance) is :mod:`.cam_lv`; :func:`_summarise` gives the
means over videos and over the true Grad-CAM and the fallback clips apart. The command is
:mod:`.gradcam_cli` (``--lv_focus``, ``--split``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from coreecho_jax import logs
from coreecho_jax.analysis import cam_lv, gradcam, runs
from coreecho_jax.errors import DataError


def split_file_names(root: str | Path, split: str = "test") -> list[str]:
    """File names (no extension) of one split of an EchoNet-layout dataset, in FileList.csv order."""
    from coreecho_jax.data.echonet.reader import read_echonet

    return [r.filename for r in read_echonet(root, required_splits=()).split(split)]


def eval_clips(
    config: ml_collections.ConfigDict, dataset_root: str | Path, name: str, n_clips: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(video ``[F, 112, 112, 3]``, starts ``[K]``, clips ``[K, T, S, S, 3]``) of video ``name`` of an
    EchoNet-layout set at the starts the test evaluation draws (``start_indexes.draw_start_indexes``,
    ``eval.seed``)."""
    from coreecho_jax.data import clips
    from coreecho_jax.data import echonet_layout as layout
    from coreecho_jax.data.echonet import start_indexes
    from coreecho_jax.data.video.video_io import read_video

    d = config.data
    video = read_video(Path(dataset_root) / layout.VIDEO_DIR / layout.avi_name(name), color=True).frames
    avi = layout.avi_name(name)
    starts = start_indexes.draw_start_indexes(
        {avi: len(video)}, n_clips, int(d.frames), int(d.stride), int(config.eval.seed)
    )[avi]
    return video, starts, clips.make_clips(video, starts, clips.ClipSpec.from_config(d))


def lv_focus(
    model: nnx.Module,
    config: ml_collections.ConfigDict,
    dataset_root: str | Path,
    file_names: Sequence[str],
    *,
    stage: int = gradcam.DEFAULT_STAGE,
    dilation: int = cam_lv.DEFAULT_DILATION,
    sign: float = 1.0,
    progress: bool = True,
) -> dict:
    """Fraction of Grad-CAM mass inside the dilated LV, per video and overall, with the chance level.

    Args:
        model: CoReEcho model (put in eval mode).
        config: the run's (inference) config: ``data.frames``, ``stride``, ``image_size``, ``channels``;
            ``eval.n_clips`` clips per video, at the starts the test evaluation draws (:func:`eval_clips`).
        dataset_root: synthetic dataset written with ``write_masks=True``.
        file_names: videos (no extension) under ``dataset_root/Videos``.
        stage: see :func:`coreecho_jax.analysis.gradcam.grad_cam`.
        sign: see :func:`coreecho_jax.analysis.gradcam.grad_cam`.
        dilation: LV dilation radius, px of the 112 px frame.

    Returns:
        :func:`_summarise` of the videos: ``{"focus_mean", "chance_mean", "focus_over_chance",
        "videos_above_chance", "n_videos", "n_clips", "clips", "fallback_clips", "fallback_share",
        "blank_clips", "gradcam_clips_*", "fallback_clips_*", "stage", "dilation_px", "videos": [{"file",
        "focus", "chance", "prediction", "clips": [{"start", "focus", "chance", "fallback"}]}]}``.

    Raises:
        DataError: a video without its mask file (``masks/<name>.npz``), or masks of another frame count.
    """
    from coreecho_jax.data.synthetic.echonet import MASK_DIR, read_mask

    d = config.data
    frames, stride, size = int(d.frames), int(d.stride), int(d.image_size)
    k = int(config.eval.n_clips)
    root = Path(dataset_root)
    rows = []
    names = list(file_names)
    for name in logs.progress(names, desc=f"LV focus, stage {stage}", unit="video") if progress else names:
        masks = read_mask(root, name)
        video, starts, x = eval_clips(config, root, name, k)
        if len(masks) != len(video):
            raise DataError(
                f"{root / MASK_DIR / name}.npz: {len(masks)} mask frames, the video has {len(video)}"
            )
        cam = gradcam.grad_cam(model, x, stage, sign=sign)
        per_clip = []
        for j, start in enumerate(starts):
            lv, valid = cam_lv.clip_lv_masks(masks, int(start), frames, stride, size, dilation)
            focus, chance = cam_lv.focus_fraction(cam.maps[j], lv, valid)
            per_clip.append(
                {"start": int(start), "focus": focus, "chance": chance, "fallback": bool(cam.fallback[j])}
            )
        rows.append(_video_row(name, per_clip, float(cam.prediction.mean())))
    return _summarise(rows, stage=stage, dilation_px=dilation, n_clips=k)


def _video_row(name: str, per_clip: list[dict], prediction: float) -> dict:
    """A video's row: the mean focus and chance over its clips with a map (a blank map has no mass)."""
    used = [c for c in per_clip if np.isfinite(c["focus"])]
    return {
        "file": name,
        "focus": float(np.mean([c["focus"] for c in used])) if used else float("nan"),
        "chance": float(np.mean([c["chance"] for c in used])) if used else float("nan"),
        "prediction": prediction,
        "clips": per_clip,
    }


def _summarise(rows: list[dict], **fields) -> dict:
    """Means over videos (and over the Grad-CAM and the fallback clips apart) of :func:`lv_focus`'s rows.

    ``gradcam_clips_*`` are over the clips whose map is the ReLU Grad-CAM, ``fallback_clips_*`` over those
    drawing the ``|G x A|`` fallback (a clip's focus and chance, not the per-video means): ``*_measured``
    clips, their ``*_focus_mean``, ``*_chance_mean`` and ``*_focus_over_chance``.
    """
    every = [c for r in rows for c in r["clips"]]

    def mean(values) -> float:
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    videos = [r for r in rows if np.isfinite(r["focus"])]
    out = {
        **fields,
        "n_videos": len(rows),
        "focus_mean": mean(r["focus"] for r in videos),
        "chance_mean": mean(r["chance"] for r in videos),
        "videos_above_chance": sum(r["focus"] > r["chance"] for r in videos),
        "clips": len(every),
        "fallback_clips": sum(c["fallback"] for c in every),
        "blank_clips": sum(not np.isfinite(c["focus"]) for c in every),
    }
    out["fallback_share"] = out["fallback_clips"] / len(every) if every else float("nan")
    out["focus_over_chance"] = out["focus_mean"] / out["chance_mean"] if videos else float("nan")
    for kind, fallback in (("gradcam", False), ("fallback", True)):
        chosen = [c for c in every if c["fallback"] == fallback and np.isfinite(c["focus"])]
        out[f"{kind}_clips_measured"] = len(chosen)
        out[f"{kind}_clips_focus_mean"] = mean(c["focus"] for c in chosen)
        out[f"{kind}_clips_chance_mean"] = mean(c["chance"] for c in chosen)
        out[f"{kind}_clips_focus_over_chance"] = (
            out[f"{kind}_clips_focus_mean"] / out[f"{kind}_clips_chance_mean"] if chosen else float("nan")
        )
    return {**out, "videos": rows}


# ------------------------------------------------------------------------------------------- transfer models

#: Why a transfer dataset has no CAM-in-LV number (module doc of :mod:`coreecho_jax.analysis.cam_lv`).
LV_UNDEFINED = {
    "hmcqu": "not defined: HMC-QU's masks outline the LV wall (myocardium), not the cavity, and have no "
    "reader here (the synthetic HMC-QU writes none)",
    **dict.fromkeys(
        ("custom_regression", "custom_classification"), "not defined: a manifest cohort has no LV masks"
    ),
}
#: The parts of a transfer fold whose videos Grad-CAM can explain.
FOLD_PARTS = ("train", "val", "test")


def transfer_clips(
    trained: runs.TrainedModel, part: str = "test", *, max_videos: int | None = None
) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and clips ``[N, T, S, S, 3]`` (normalised) of the videos in ``part`` of the model's fold.

    The clips are the fold's own: ``transfer.data.prepare`` with the transfer workdir's config (its
    cache in ``<workdir>/prepared``; the download must still be at ``data.root``), one clip per video,
    normalised with ``data.mean``/``data.std`` (:func:`coreecho_jax.data.transfer.cycles.normalise`).

    Raises:
        GradCamError: an unknown ``part``, or a fold without videos there.
    """
    from coreecho_jax.data.transfer import cycles
    from coreecho_jax.transfer import data as transfer_data

    if part not in FOLD_PARTS:
        raise gradcam.GradCamError(f"--split={part}: a transfer fold's part must be one of {FOLD_PARTS}")
    d = trained.config.data
    prepared = transfer_data.prepare(trained.task, d, trained.workdir, progress=False)
    if not 0 <= trained.fold < len(prepared.folds):
        raise gradcam.GradCamError(
            f"{trained.workdir}: fold {trained.fold} is not one of its {len(prepared.folds)} folds"
        )
    names = tuple(getattr(prepared.folds[trained.fold], part))[:max_videos]
    if not names:
        raise gradcam.GradCamError(
            f"{trained.workdir}: fold {trained.fold} has no {part} videos; choose another --split"
        )
    return names, cycles.normalise(prepared.clips[prepared.rows(names)], d.mean, d.std)


def transfer_lv_masks(
    trained: runs.TrainedModel, names: Sequence[str], dilation: int
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The dilated LV of each clip (``{name: bool [T, S, S]}``, :func:`cam_lv.cycle_lv_masks`) and the
    videos left out with why (``[{"name", "reason"}]``).

    CAMUS only (its per-frame segmentation, :meth:`coreecho_jax.data.transfer.camus.CamusRecord.lv_masks`); for
    another task every video is left out with :data:`LV_UNDEFINED`'s reason.
    """
    from coreecho_jax.data.transfer import camus
    from coreecho_jax.transfer import data as transfer_data

    if trained.task != "camus":
        return {}, [{"name": n, "reason": LV_UNDEFINED[trained.task]} for n in names]
    d = trained.config.data
    cam_lv.clip_dilation(dilation, int(d.image_size))  # a bad radius is an error, not a skipped video
    root = transfer_data.download_root(trained.task, d, trained.workdir)
    records = {r.patient: r for r in camus.read_camus(root, str(d.view), on_error="skip").records}
    spec = transfer_data.cycle_spec(d)
    masks, skipped = {}, []
    for name in names:
        if name not in records:
            skipped.append({"name": name, "reason": f"{root}: {name} is not readable there any more"})
            continue
        try:
            masks[name] = cam_lv.cycle_lv_masks(records[name].lv_masks(), spec, dilation)
        except DataError as e:
            skipped.append({"name": name, "reason": str(e)})
    return masks, skipped


def transfer_focus(
    trained: runs.TrainedModel,
    names: Sequence[str],
    clips: np.ndarray,
    *,
    stage: int = gradcam.DEFAULT_STAGE,
    dilation: int = cam_lv.DEFAULT_DILATION,
    sign: float = 1.0,
    lv: tuple[dict[str, np.ndarray], list[dict]] | None = None,
) -> tuple[dict, gradcam.GradCam]:
    """Grad-CAM of a transfer model's clips: the fallback share, and where the dataset segments the LV
    (CAMUS) the CAM mass in it, as :func:`lv_focus` (one clip per video, no end padding).

    ``lv``: :func:`transfer_lv_masks` of ``names`` when already read (else read here, with ``dilation``).

    Returns:
        ``({"stage", "clips", "fallback_clips", "fallback_share", "blank_clips", "blank_share",
        "lv": :func:`_summarise` of the videos with masks | absent, "lv_undefined": why | absent,
        "lv_skipped": [{"name", "reason"}], "videos": [{"file", "prediction", "fallback", "blank"}]}, cam)``.
    """
    cam = gradcam.grad_cam_batched(
        trained.model, clips, stage, sign=sign, batch_size=int(trained.config.eval.batch_size)
    )
    masks, skipped = transfer_lv_masks(trained, names, dilation) if lv is None else lv
    rows = []
    for i, name in enumerate(names):
        if name in masks:
            focus, chance = cam_lv.focus_fraction(cam.maps[i], masks[name])
            clip = {"start": 0, "focus": focus, "chance": chance, "fallback": bool(cam.fallback[i])}
            rows.append(_video_row(name, [clip], float(cam.prediction[i])))
    out: dict = {"stage": stage, **gradcam.cam_counts(cam.fallback, cam.blank)}
    if rows:
        radius = cam_lv.clip_dilation(dilation, int(trained.config.data.image_size))
        out["lv"] = {
            k: v for k, v in _summarise(rows, dilation_px=radius, n_clips=1).items() if k != "videos"
        }
    else:
        first = skipped[0]["reason"] if skipped else "no videos"
        out["lv_undefined"] = first if trained.task != "camus" else f"no video with LV masks; first: {first}"
    out["lv_skipped"] = skipped if rows else []
    by_name = {r["file"]: r for r in rows}
    out["videos"] = []
    for i, name in enumerate(names):
        video = {"file": name, "prediction": float(cam.prediction[i]), "fallback": bool(cam.fallback[i])}
        video["blank"] = bool(cam.blank[i])
        if name in by_name:
            video |= {"focus": by_name[name]["focus"], "chance": by_name[name]["chance"]}
        out["videos"].append(video)
    return out, cam
