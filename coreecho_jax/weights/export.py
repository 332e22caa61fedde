"""Export a trained model as a weights folder (:mod:`coreecho_jax.inference.weights_folder`).

``export_weights(source, folder)`` reads

* a CoReEcho run workdir: its best checkpoint (the one ``predict`` loads), its config, its
  ``calibration.json`` when it was fitted for these weights and K, its ``results.json`` for the card;
* a CoReEcho PyTorch ``best.pth`` (the official UniFormer-S checkpoint, through the safe importer
  :mod:`coreecho_jax.checkpoints.torch_import`) or a folder that importer wrote: the architecture from
  the file, the clip settings from the given config (the file records none), a ``calibration.json``
  beside it when it fits;
* a UniFormer ``.pth`` without a regression head (the Kinetics-400 ``uniformer_small_k400_16x8.pth``):
  an encoder-only folder, which embeds but cannot predict EF (its card says so);

and writes ``model.safetensors``, ``config.json``, ``calibration.json`` (when one fits), ``README.md``
(the model card, :mod:`.card`) and ``manifest.json``. The command::

    coreecho export-weights --source=runs/echonet --out=weights/echonet
    coreecho export-weights --source=best.pth --out=weights/official --config=echonet
    coreecho export-weights --source=uniformer_small_k400_16x8.pth --out=weights/k400 --config=echonet

(``main(argv)``; a ``--config.<field>=value`` overrides a field, e.g. the runtime model fields.)
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import ml_collections
from flax import nnx

from coreecho_jax.checkpoints import saved_config, torch_import
from coreecho_jax.checkpoints.torch_pth import CheckpointNotFoundError
from coreecho_jax.errors import ConfigError
from coreecho_jax.evaluation import conformal, results
from coreecho_jax.evaluation.evaluator import model_fingerprint
from coreecho_jax.inference import runs, weights_folder
from coreecho_jax.models.coreecho import CoReEcho
from coreecho_jax.weights import card

RESULTS_FILE = "results.json"  # what a finished run writes (coreecho_jax.train.loop)


def export_weights(
    source: str | Path,
    folder: str | Path,
    *,
    config: ml_collections.ConfigDict | None = None,
    force: bool = False,
) -> Path:
    """Writes the weights folder of ``source`` into ``folder`` (module doc); returns ``folder``.

    Args:
        source: a run workdir, a CoReEcho or UniFormer ``.pth``, or a folder ``torch_import`` wrote.
        folder: the new folder (refused when it exists and is not empty, unless ``force``).
        config: the clip settings of a ``.pth`` (required there: the file records none); for a run, an
            optional config checked against the run's clip settings (its runtime model fields are kept).
        force: replace the files of an existing folder.

    Raises:
        ConfigError: a ``.pth`` without ``config``, or a config that disagrees with the run.
        CheckpointError: an unreadable, unsafe or unfitting checkpoint; a non-empty ``folder``.
    """
    source = Path(source)
    if not source.is_file() and not _is_run(source) and not (source / torch_import.CONFIG_FILE).is_file():
        raise CheckpointNotFoundError(
            f"{source}: not a run workdir (with checkpoints/), a .pth file or a folder written by "
            f"torch_import (with {torch_import.CONFIG_FILE})"
        )
    if _is_run(source):
        model, run_config, facts = _from_run(source, config)
    else:
        model, run_config, facts = _from_torch(source, config)
    fingerprint = model_fingerprint(model)
    calibration, calibration_text = _calibration(source, fingerprint, run_config, facts["has_head"])
    calibration_text = _without_local_paths(calibration_text, source)
    folder_config = weights_folder.folder_config(
        run_config,
        model,
        weights_sha256=fingerprint,
        source={"kind": facts["kind"], "origin": facts["origin"]},
    )
    text = card.render(
        folder_config,
        card.Source(calibration=calibration_text, **{k: v for k, v in facts.items() if k != "has_head"}),
        datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
    )
    return weights_folder.write_folder(folder, model, folder_config, text, calibration, force=force)


def _without_local_paths(text: str, source: Path) -> str:
    """``text`` with the source's location on this machine shortened to its name: a folder to share
    names no local path."""
    for prefix in sorted({str(source.resolve()), str(source.absolute()), str(source)}, key=len, reverse=True):
        text = text.replace(prefix, source.resolve().name)
    return text


def _is_run(source: Path) -> bool:
    return source.is_dir() and (source / "checkpoints").is_dir()


def _from_run(source: Path, config: ml_collections.ConfigDict | None) -> tuple[nnx.Module, dict, dict]:
    trained = runs.load_run(config, source)
    run_config = trained.config.to_dict()
    data = run_config["data"]
    if data.get("synthetic", {}).get("enabled"):
        training = (
            "Synthetic echocardiograms that coreecho-jax generates (`data.synthetic`, EchoNet-Dynamic "
            "layout), **not patients**: these weights test the software and mean nothing clinically."
        )
    else:
        training = (
            "EchoNet-Dynamic (Ouyang et al., Nature 2020): apical four-chamber echocardiography videos of "
            "Stanford Health Care patients, with the EF of their FileList.csv; trained on its TRAIN split, "
            "the epoch chosen on VAL (`config.json` of the run lists every setting)."
        )
    facts = {
        "title": "CoReEcho EF regression (coreecho-jax run)",
        "kind": "run",
        "origin": f"the run `{source.resolve().name}` ({_without_local_paths(trained.origin, source)})",
        "training_data": training,
        "metrics": _run_metrics(source, int(trained.config.eval.n_clips)),
        "licence": card.RUN_LICENCE,
        "licence_id": "other",
        "has_head": True,
    }
    return trained.model, run_config, facts


def _run_metrics(source: Path, k: int) -> str:
    """The card's metrics: the run's test results (split, date of results.json, table)."""
    path = source / RESULTS_FILE
    if not path.is_file():
        return f"None: the run has no {RESULTS_FILE} (its test did not run or finish)."
    found = json.loads(path.read_text())
    date = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC).strftime("%Y-%m-%d")
    try:
        table = results.format_results(found)
    except (KeyError, TypeError, ValueError) as e:
        return f"{RESULTS_FILE} of the run ({date}) could not be read as a results table ({e!r})."
    return (
        f"The run's test split, {k} clips per video at fixed starts, as its {RESULTS_FILE} recorded them on "
        f"{date} (95 % bootstrap confidence intervals):\n\n```\n{table}\n```"
    )


def _head_dim(config: ml_collections.ConfigDict) -> int | None:
    """The attention head width the config sets explicitly (not visible in a ``.pth``'s weights); None:
    the head_dim of the preset the weights' shapes match (:func:`torch_import.import_pth`), which is
    right even when the config's preset is another architecture."""
    value = config.model.get("head_dim")
    return int(value) if value else None


def _from_torch(source: Path, config: ml_collections.ConfigDict | None) -> tuple[nnx.Module, dict, dict]:
    if config is None:
        raise ConfigError(
            f"{source}: a .pth or imported folder records no clip settings; give the config they were "
            f"trained with (--config=configs/echonet.py for the official checkpoints)"
        )
    if source.is_file():
        model, info = torch_import.import_pth(source, head_dim=_head_dim(config))
        meta = info.meta
    else:
        model = torch_import.restore_imported(source)
        meta = json.loads((source / torch_import.CONFIG_FILE).read_text()).get("meta", {})
    run_config = saved_config.inference_config(config, source).to_dict()
    epoch = f", epoch {meta['epoch']}" if meta.get("epoch") is not None else ""
    origin = f"{source.name} (PyTorch checkpoint, layout {meta.get('format')}{epoch})"
    if isinstance(model, CoReEcho):
        facts = {
            "title": "CoReEcho EF regression (converted PyTorch checkpoint)",
            "kind": "pth",
            "training_data": (
                "EchoNet-Dynamic (Ouyang et al., Nature 2020), as trained with the official CoReEcho code; "
                "the official checkpoint (UniFormer-S, the README of github.com/BioMedIA-MBZUAI/CoReEcho) "
                "was trained by the CoReEcho authors. The file records no more than its epoch."
            ),
            "metrics": (
                "Not measured by this export. For the official checkpoint the CoReEcho paper reports MAE 3.90, "
                "RMSE 5.13 and R2 82 (x 100) on the EchoNet-Dynamic TEST split with 3 clips per video. "
                "Measure these weights with `coreecho evaluate --config=echonet "
                "--checkpoint=<this folder> --workdir=<out>`."
            ),
            "licence": card.COREECHO_LICENCE,
            "licence_id": "cc-by-nc-4.0",
            "has_head": True,
        }
    else:
        facts = {
            "title": "UniFormer video encoder (Kinetics-400 pretraining), no EF head",
            "kind": "encoder",
            "training_data": (
                "Kinetics-400 action recognition videos (the Sense-X/uniformer_video `*_k400_*` checkpoints), "
                "no echocardiography. The classifier the file carried is dropped; there is **no trained EF "
                "head**: these weights embed videos, and start CoReEcho training, but predict nothing."
            ),
            "metrics": "None for EF: an encoder without a head predicts no EF.",
            "licence": card.UNIFORMER_LICENCE,
            "licence_id": "mit",
            "has_head": False,
        }
    return model, run_config, {**facts, "origin": origin}


def _calibration(source: Path, fingerprint: str, run_config: dict, has_head: bool) -> tuple[Path | None, str]:
    """The source's ``calibration.json`` when it was fitted for these weights and K, and the card's text."""
    if not has_head:
        return None, "None: an encoder without an EF head has no EF intervals."
    path = conformal.calibration_path(source)
    k = int(run_config["eval"]["n_clips"])
    calibration, why = conformal.matching(path, fingerprint, k)
    if calibration is None:
        return None, (
            f"No `calibration.json` ({why}): predictions carry no interval. Fit one on labelled videos of "
            f"your population (`coreecho evaluate`, then `coreecho calibrate --workdir=... --out=...`) and put it "
            "in this folder."
        )
    return path, (
        f"`calibration.json`: split-conformal intervals at {100 * calibration.level:g} %, {k} clips per "
        f"video, fitted on {calibration.source or 'the validation split'} "
        f"({sum(calibration.n)} videos, per predicted-EF bin {list(calibration.n)})."
    )


def summary(folder: Path) -> str:
    """What ``coreecho export-weights`` prints: the folder's files with their sizes and sha256."""
    manifest = json.loads((folder / weights_folder.MANIFEST_FILE).read_text())["files"]
    config = json.loads((folder / weights_folder.CONFIG_FILE).read_text())
    lines = [f"wrote {folder}:"]
    lines += [f"  {name:<18} {e['bytes']:>12,d} B  sha256 {e['sha256']}" for name, e in manifest.items()]
    lines.append(f"  {weights_folder.MANIFEST_FILE}")
    if not config["has_head"]:
        lines.append("an encoder without an EF head: it embeds videos but cannot predict EF")
    elif weights_folder.CALIBRATION_FILE not in manifest:
        lines.append(
            "no calibration.json fitted for these weights: predictions carry no EF interval (README.md)"
        )
    return "\n".join(lines)
