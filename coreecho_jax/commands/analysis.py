"""gradcam, umap, shift: the analysis commands (:mod:`coreecho_jax.analysis`)."""

from __future__ import annotations

import json

import ml_collections
from absl import flags

from coreecho_jax.commands import Spec


def _define_gradcam(fv: flags.FlagValues) -> None:
    from coreecho_jax.analysis import gradcam_cli

    d = gradcam_cli.GradCamOptions(checkpoint=(), out="")
    flags.DEFINE_multi_string(
        "checkpoint",
        None,
        "Run workdir, imported folder, CoReEcho .pth or transfer fold (WORKDIR/folds/fold<k>); repeat it "
        "for one figure row per model (Fig. 3: the EchoNet run, a CAMUS and an HMC-QU fold).",
        flag_values=fv,
    )
    flags.DEFINE_string("out", None, "Output folder.", flag_values=fv)
    flags.DEFINE_string(
        "video", d.video, "EchoNet models: the AVI/MP4/DICOM file to explain.", flag_values=fv
    )
    flags.DEFINE_string(
        "stage", d.stage, "Encoder stage(s) 1-4, comma-separated, e.g. 2,3,4.", flag_values=fv
    )
    flags.DEFINE_integer(
        "clips", d.clips, "Evenly spaced clips of the video (pictures of each).", flag_values=fv
    )
    flags.DEFINE_enum("movie", d.movie, ["gif", "mp4"], "Movie format of the explained clip.", flag_values=fv)
    flags.DEFINE_enum("sign", "1", ["1", "-1"], "-1: the evidence for a lower output.", flag_values=fv)
    flags.DEFINE_string(
        "lv_focus",
        d.lv_focus,
        "EchoNet models: a synthetic dataset root with masks/ (CAM mass in the LV).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "split",
        d.split,
        "The split of --lv_focus; for a transfer fold its part (train, val, test).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "dilation", d.dilation, "LV dilation radius in px of the 112 px frame.", flag_values=fv
    )
    flags.DEFINE_integer("max_videos", d.max_videos, "The first N videos of the split only.", flag_values=fv)


def _gradcam(fv: flags.FlagValues, config: ml_collections.ConfigDict | None) -> dict:
    from coreecho_jax.analysis import gradcam_cli

    options = gradcam_cli.GradCamOptions(
        checkpoint=tuple(fv.checkpoint),
        out=fv.out,
        video=fv.video,
        stage=fv.stage,
        clips=fv.clips,
        movie=fv.movie,
        sign=float(fv.sign),
        lv_focus=fv.lv_focus,
        split=fv.split,
        dilation=fv.dilation,
        max_videos=fv.max_videos,
    )
    return gradcam_cli.run(options, config)


def _define_umap(fv: flags.FlagValues) -> None:
    from coreecho_jax.analysis import umap_figure as u

    flags.DEFINE_list("runs", None, "Comma list of run workdirs with embeddings_<split>.npz.", flag_values=fv)
    flags.DEFINE_list("labels", [], "Comma list of panel titles (default: the folder names).", flag_values=fv)
    flags.DEFINE_string("out", None, "The PNG to write.", flag_values=fv)
    flags.DEFINE_list("splits", list(u.SPLITS), "Rows, top first.", flag_values=fv)
    flags.DEFINE_enum(
        "embedding",
        "best_pass",
        list(u.EMBEDDINGS),
        "best_pass: one clip per video, the official pass choice; mean: the mean of the K clips.",
        flag_values=fv,
    )
    flags.DEFINE_integer("n_neighbors", u.N_NEIGHBORS, "UMAP neighbours (official 5).", flag_values=fv)
    flags.DEFINE_float("min_dist", u.MIN_DIST, "UMAP min_dist (umap-learn's default).", flag_values=fv)
    flags.DEFINE_enum("init", u.INIT, list(u.INITS), "UMAP initialisation (official random).", flag_values=fv)
    flags.DEFINE_integer("seed", u.SEED, "UMAP random_state (official 0).", flag_values=fv)
    flags.DEFINE_string(
        "cmap", u.OFFICIAL_CMAP, f"{u.OFFICIAL_CMAP} (official) or a matplotlib colour map.", flag_values=fv
    )


def _umap(fv: flags.FlagValues, config: None) -> str:
    from coreecho_jax.analysis import umap_figure

    out = umap_figure.plot_runs(
        fv.runs,
        fv.out,
        labels=fv.labels or None,
        splits=[s.strip() for s in fv.splits if s.strip()],
        embedding=fv.embedding,
        cmap=fv.cmap,
        seed=fv.seed,
        n_neighbors=fv.n_neighbors,
        min_dist=fv.min_dist,
        init=fv.init,
    )
    print(out)
    return str(out)


def _define_shift(fv: flags.FlagValues) -> None:
    from coreecho_jax.analysis import shift
    from coreecho_jax.inference.shift import DEFAULT_K

    flags.DEFINE_string(
        "workdir", None, "Where shift_eval.json goes (and the run, unless --checkpoint).", flag_values=fv
    )
    flags.DEFINE_string(
        "checkpoint",
        None,
        "A run workdir, an imported Orbax folder or a .pth; default: --workdir.",
        flag_values=fv,
    )
    flags.DEFINE_list(
        "shifts", [], f"Comma list of {', '.join(shift.SHIFTS)} (default: all).", flag_values=fv
    )
    flags.DEFINE_integer(
        "k", DEFAULT_K, "Nearest training embeddings of the score.", lower_bound=1, flag_values=fv
    )


def _shift(fv: flags.FlagValues, config: ml_collections.ConfigDict) -> dict:
    import jax

    from coreecho_jax.analysis import shift_eval
    from coreecho_jax.evaluation.results import json_ready

    result = shift_eval.run_shift_eval(config, fv.workdir, fv.checkpoint, shifts=fv.shifts, k=fv.k)
    if jax.process_index() == 0:
        print(json.dumps(json_ready(result), indent=2))
    return result


#: The commands of this module, by name (:data:`coreecho_jax.cli.COMMANDS`).
SPECS = {
    "gradcam": Spec(_define_gradcam, _gradcam, config="optional", required=("checkpoint", "out")),
    "umap": Spec(_define_umap, _umap, config="none", required=("runs", "out")),
    "shift": Spec(_define_shift, _shift, required=("workdir",)),
}
