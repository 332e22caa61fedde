"""calibrate, import-weights, export-weights, synthetic: the commands around a run (intervals, weights,
data to try)."""

from __future__ import annotations

import math
from pathlib import Path

from absl import flags

from coreecho_jax import cli
from coreecho_jax.commands import Spec
from coreecho_jax.errors import CheckpointError


# ------------------------------------------------------------------------------------------- calibrate
def _define_calibrate(fv: flags.FlagValues) -> None:
    from coreecho_jax.evaluation import conformal

    flags.DEFINE_string(
        "workdir",
        None,
        f"The coreecho evaluate workdir ({conformal.PREDICTIONS_CSV}, {conformal.RESULTS_JSON}).",
        flag_values=fv,
    )
    flags.DEFINE_string("out", None, "Where to write calibration.json (beside the weights).", flag_values=fv)
    flags.DEFINE_float("level", conformal.DEFAULT_LEVEL, "Coverage level, e.g. 0.9.", flag_values=fv)


def _calibrate(fv: flags.FlagValues, config: None) -> Path:
    from coreecho_jax.evaluation import conformal

    calibration = conformal.fit_from_evaluation(fv.workdir, fv.level)
    out = calibration.save(fv.out)
    for b, name in enumerate(calibration.names):
        q = calibration.quantiles[b]
        print(f"{name}: {calibration.n[b]} videos, quantile " + (f"{q:.3f}" if math.isfinite(q) else "none"))
    print(f"wrote {out}")
    return out


# -------------------------------------------------------------------------------------- import-weights
def _define_import_weights(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        "pth", None, "The .pth file (read without torch and without running its code).", flag_values=fv
    )
    flags.DEFINE_string("out", None, "Output folder (gets model/ and model_config.json).", flag_values=fv)
    flags.DEFINE_integer(
        "head_dim",
        None,
        "Attention head width; default: the preset's the weights match (64 for UniFormer-S/B).",
        flag_values=fv,
    )
    flags.DEFINE_bool("with_classifier", False, "Keep the Kinetics classifier head.", flag_values=fv)
    flags.DEFINE_bool(
        "allow_namespace",
        False,
        "Read a pickled argparse.Namespace (CoReEcho's last.pth 'opt') as a dict.",
        flag_values=fv,
    )
    flags.DEFINE_bool("force", False, "Overwrite an existing OUT/model.", flag_values=fv)


def _import_weights(fv: flags.FlagValues, config: None) -> Path:
    from coreecho_jax.checkpoints import torch_import
    from coreecho_jax.checkpoints.torch_pth import UnsafeCheckpointError

    try:
        model, info = torch_import.import_pth(
            fv.pth,
            head_dim=fv.head_dim,
            with_classifier=fv.with_classifier,
            allow_namespace=fv.allow_namespace,
        )
        out = torch_import.save_imported(model, info, fv.out, force=fv.force)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"refused an unsafe checkpoint: {e}") from None
    except OSError as e:  # an unreadable .pth or an unwritable --out: one line, as any refused input
        raise CheckpointError(str(e)) from None
    print(torch_import.summary(info, out))
    return out


# -------------------------------------------------------------------------------------- export-weights
def _define_export_weights(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        "source", None, "Run workdir, CoReEcho/UniFormer .pth, or import-weights folder.", flag_values=fv
    )
    flags.DEFINE_string("out", None, "The weights folder to write.", flag_values=fv)
    flags.DEFINE_boolean("force", False, "Replace the files of an existing folder.", flag_values=fv)


def _export_weights(fv: flags.FlagValues, config) -> Path:
    from coreecho_jax.weights import export

    try:
        folder = export.export_weights(fv.source, fv.out, config=config, force=fv.force)
    except OSError as e:  # an unreadable source or an unwritable --out: one line, as any refused input
        raise CheckpointError(str(e)) from None
    print(export.summary(folder))
    return folder


# ------------------------------------------------------------------------------------------- synthetic
#: The flags of one dataset only, and the writer's config field each sets (``n`` and ``size``: all).
ONLY = {
    "echonet": {"workers": None, "fps": "fps", "min_frames": "min_frames", "max_frames": "max_frames",
                "tracings": "with_tracings", "masks": None, "progress": None},
    "camus": {"release": "release", "with_2ch": "with_2ch"},
    "hmcqu": {"height": "height", "width": "width", "header": "header"},
    "dicom": {"bad_files": "bad_files"},
}  # fmt: skip


def _define_synthetic(fv: flags.FlagValues) -> None:
    from coreecho_jax.data.synthetic import camus, dicom_corpus, hmcqu
    from coreecho_jax.data.synthetic.echonet import MASK_DIR, SyntheticConfig

    e, c, h = SyntheticConfig(), camus.CamusSyntheticConfig(), hmcqu.HmcQuSyntheticConfig()
    d = dicom_corpus.DicomCorpusConfig()
    flags.DEFINE_enum(
        "dataset",
        "echonet",
        ["echonet", "camus", "hmcqu", "dicom"],
        "echonet: the EchoNet-Dynamic layout; camus, hmcqu: a download of those datasets; dicom: a DICOM "
        "corpus in MIMIC-IV-ECHO's folder tree (coreecho_jax.data.corpus).",
        flag_values=fv,
    )
    flags.DEFINE_string("root", None, "Output folder.", flag_values=fv)
    flags.DEFINE_integer(
        "n", None, f"Videos (echonet {e.n_videos}, hmcqu {h.n_videos}, dicom {d.n_files}) or patients "
        f"(camus {c.n_patients}).",
        lower_bound=1, flag_values=fv,
    )  # fmt: skip
    flags.DEFINE_integer("seed", 0, "Seed of the videos and labels.", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer(
        "size", None,
        f"Side of the drawn square, px (echonet {e.size}, camus {c.size}, hmcqu {h.size}, dicom {d.size}).",
        lower_bound=1, flag_values=fv,
    )  # fmt: skip
    flags.DEFINE_integer("workers", 1, "echonet: drawing processes.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("fps", e.fps, "echonet: frame rate.", flag_values=fv)
    flags.DEFINE_integer("min_frames", e.min_frames, "echonet: the shortest video, frames.", flag_values=fv)
    flags.DEFINE_integer("max_frames", e.max_frames, "echonet: the longest video, frames.", flag_values=fv)
    flags.DEFINE_bool("tracings", True, "echonet: write VolumeTracings.csv.", flag_values=fv)
    flags.DEFINE_bool(
        "masks", False, f"echonet: also write {MASK_DIR}/<FileName>.npz (LV masks).", flag_values=fv
    )
    flags.DEFINE_bool("progress", True, "echonet: a progress bar.", flag_values=fv)
    flags.DEFINE_enum(
        "release", c.release, list(camus.RELEASES), "camus: the release's layout.", flag_values=fv
    )
    flags.DEFINE_bool("with_2ch", False, "camus: also write the two-chamber view.", flag_values=fv)
    flags.DEFINE_integer("height", h.height, "hmcqu: AVI frame height.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("width", h.width, "hmcqu: AVI frame width.", lower_bound=1, flag_values=fv)
    flags.DEFINE_enum(
        "header", h.header, list(hmcqu.HEADER_STYLES), "hmcqu: the label sheet's header.", flag_values=fv
    )
    flags.DEFINE_bool(
        "bad_files",
        d.bad_files,
        "dicom: also write one file of each kind preparation refuses.",
        flag_values=fv,
    )


def _synthetic(fv: flags.FlagValues, config: None) -> Path:
    from coreecho_jax.data import synthetic

    dataset = fv.dataset
    foreign = [(n, d) for d, names in ONLY.items() if d != dataset for n in names if fv[n].present]
    if foreign:
        raise cli.UsageError(
            "\n".join(f"--{n}: a flag of --dataset={d}, not of --dataset={dataset}" for n, d in foreign)
        )
    fields = {field: fv[name].value for name, field in ONLY[dataset].items() if field}
    fields[{"camus": "n_patients", "dicom": "n_files"}.get(dataset, "n_videos")] = fv.n
    fields.update(seed=fv.seed, size=fv.size)
    fields = {k: v for k, v in fields.items() if v is not None}  # None: the writer's default
    if dataset == "echonet":
        cfg = synthetic.SyntheticConfig(**fields)
        root = synthetic.write_echonet_dataset(
            fv.root, cfg, workers=fv.workers, progress=fv.progress, write_masks=fv.masks
        )
        print(f"synthetic EchoNet-Dynamic dataset ({cfg.n_videos} videos, seed {cfg.seed}) at {root}")
    elif dataset == "camus":
        cfg = synthetic.CamusSyntheticConfig(**fields)
        root = synthetic.write_camus_dataset(fv.root, cfg)
        print(
            f"synthetic CAMUS {cfg.release} download ({cfg.n_patients} patients, seed {cfg.seed}) at {root}"
        )
    elif dataset == "dicom":
        from coreecho_jax.data.synthetic import dicom_corpus

        cfg = dicom_corpus.DicomCorpusConfig(**fields)
        root = dicom_corpus.write_dicom_corpus(fv.root, cfg)
        print(f"synthetic DICOM corpus ({cfg.n_files} cines, seed {cfg.seed}) at {root}")
    else:
        cfg = synthetic.HmcQuSyntheticConfig(**fields)
        root = synthetic.write_hmcqu_dataset(fv.root, cfg)
        print(f"synthetic HMC-QU download ({cfg.n_videos} videos, seed {cfg.seed}) at {root}")
    return Path(root)


#: The commands of this module, by name (:data:`coreecho_jax.cli.COMMANDS`).
SPECS = {
    "calibrate": Spec(_define_calibrate, _calibrate, config="none", required=("workdir", "out")),
    "import-weights": Spec(_define_import_weights, _import_weights, config="none", required=("pth", "out")),
    "export-weights": Spec(
        _define_export_weights, _export_weights, config="optional", required=("source", "out")
    ),
    "synthetic": Spec(_define_synthetic, _synthetic, config="none", required=("root",)),
}
