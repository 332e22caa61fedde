"""One record per transfer dataset: everything the data step, the loop and the tables need to know of it.

A :class:`Task` names its reader (download -> records, folds, the files they depend on), how a record
becomes frames, a label and a group, its kind (:data:`coreecho_jax.transfer.steps.KINDS`: the loss, the
fresh head, the evaluator with its output link, selection score and baseline), the headline metric,
the baseline's label, the table's columns and the paper's rows. ``config.task`` names the record;
:func:`get` finds it. A new dataset is one new record passed to :func:`register`, with no branch
elsewhere: the loop (:mod:`coreecho_jax.transfer.loop`), the data step
(:mod:`coreecho_jax.transfer.data`) and the tables (:mod:`coreecho_jax.transfer.report`) only read
records.

The two of the paper: :data:`CAMUS` (Table 4: EF regression per image quality) and :data:`HMCQU`
(Table 5: myocardial infarction, MI = 1). Your own cohort, a manifest CSV
(:mod:`coreecho_jax.data.transfer.manifest`): :data:`CUSTOM_REGRESSION` (EF %) and
:data:`CUSTOM_CLASSIFICATION` (1 / 0), one record per kind (``config.task`` chooses it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from coreecho_jax.data.transfer import camus, hmcqu, manifest
from coreecho_jax.data.transfer.folds import Fold
from coreecho_jax.errors import ConfigError
from coreecho_jax.evaluation import categories
from coreecho_jax.evaluation import transfer as transfer_eval
from coreecho_jax.transfer.steps import KINDS, Kind


class Source(NamedTuple):
    """What a task's reader found in a download.

    Attributes:
        dataset: its records (each named by the attribute ``dataset.NAME_FIELD``), ``view``,
            ``skipped`` (:class:`~coreecho_jax.data.transfer.records.Skipped`) and ``report(unreadable)``, a
            headline of what was read (:class:`~coreecho_jax.data.transfer.records.NamedRecords` readers have them).
        folds: the cross-validation folds (names).
        files: the files the clips depend on (their size and time key the prepared clips' cache).
        columns: where each field was read (HMC-QU's sheet columns, for the preparation report); {}.
    """

    dataset: Any
    folds: list[Fold]
    files: list[Path]
    columns: dict[str, str]


def _no_note(scheme: str, n_folds: int) -> str | None:
    return None


@dataclasses.dataclass(frozen=True)
class Task:
    """A transfer dataset (module doc). Callables take the ``config.data`` / ``config.eval`` sections.

    Attributes:
        name: ``config.task``.
        title: the dataset in messages and plot titles.
        kind: what the head predicts (:data:`~coreecho_jax.transfer.steps.KINDS`).
        read: ``(config.data, download root) -> Source``.
        frames: ``(record, frame selection) -> [F, H, W]`` grey or ``[F, H, W, 3]`` RGB frames of its
            cycle (:func:`coreecho_jax.data.transfer.cycles.cycle_to_clip` makes the clip); raises DataError
            when its pixels cannot be read.
        label: ``record -> (label, group)``: the label (EF %, or 1 / 0) and the record's group (a
            metric group, e.g. CAMUS image quality, or its class).
        frame_selection: ``config.data -> str``, how the frames of a cycle are chosen ("" when there is
            one way; HMC-QU: ``data.cycle_frames``; a manifest: ``data.crop``, how a video is cropped to
            its image), passed to ``frames``; part of the prepared clips' cache key.
        write_synthetic: ``(root, config.data.synthetic) -> root``: writes a synthetic download.
        describe_data: ``config.data -> str``: the fields that chose the videos (for messages).
        headline: the metric printed per fold (a key of the kind's metrics).
        baseline_label: the trivial baseline's row in the table.
        columns: ``{metric: column title}`` of the table, in order.
        paper_rows: ``{setting: {metric: value}}``, the paper's own rows printed below ours.
        comparison: which of our rows the paper's are set against, and why.
        pooled_rows: the table also shows the values pooled over every tested video.
        groups: regression: ``{metric group: the video groups it holds}``.
        classes: classification: the names of the positive (1) and the negative (0) class.
        fold_fields: the config fields that define the folds (for messages).
        protocol_note: ``(data.folds, number of folds) -> str | None``: the protocol line when the
            scheme needs more words than "<n>-fold cross-validation".
        source_field: the ``config.data`` field that names the download (``root``: a folder; a
            manifest task's ``manifest``: its CSV).
        source_noun: what that field names, in the message when it is empty.
    """

    name: str
    title: str
    kind: Kind
    read: Callable[[Any, Path], Source]
    frames: Callable[[Any, str], np.ndarray]
    label: Callable[[Any], tuple[float, str]]
    frame_selection: Callable[[Any], str]
    write_synthetic: Callable[[Path, Any], Path]
    describe_data: Callable[[Any], str]
    headline: str
    baseline_label: str
    columns: Mapping[str, str]
    paper_rows: Mapping[str, Mapping[str, float]]
    comparison: str
    pooled_rows: bool = False
    groups: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    classes: tuple[str, str] = ("positive", "negative")
    fold_fields: str = "data.folds"
    protocol_note: Callable[[str, int], str | None] = _no_note
    source_field: str = "root"
    source_noun: str = "download"

    def evaluator(
        self, *, threshold: float = 0.5, inclusive: bool = False
    ) -> transfer_eval.TransferEvaluator:
        """The evaluator of this task's kind with its groups or classes; a classification predicts the
        positive class above ``threshold`` (at or above it with ``inclusive``: ``config.eval``'s
        ``threshold`` and ``threshold_inclusive``)."""
        return self.kind.evaluator(self, threshold, inclusive)


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Adds ``task`` under ``task.name`` (a record of that name is replaced); returns it."""
    _TASKS[task.name] = task
    return task


def unregister(name: str) -> None:
    """Removes the record ``name`` (tests that registered one)."""
    _TASKS.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered tasks' names, in registration order."""
    return tuple(_TASKS)


def get(task: str | Task) -> Task:
    """The record named ``task`` (or ``task`` itself). Raises ConfigError naming the known tasks."""
    if isinstance(task, Task):
        return task
    if task not in _TASKS:
        raise ConfigError(f"task must be one of {names()}, got {task!r}")
    return _TASKS[task]


# ------------------------------------------------------------------------------------------- CAMUS


def _read_camus(data_config: Any, root: Path) -> Source:
    ds = camus.read_camus(root, str(data_config.view), on_error=str(data_config.on_error))
    split_dir = str(data_config.split_dir) or None
    folds = ds.folds(str(data_config.folds), n_folds=int(data_config.n_folds), split_dir=split_dir)
    files = [p for r in ds.records for p in (r.path, r.cfg_path, r.path.with_suffix(".raw"))]
    return Source(ds, folds, [p for p in files if p.exists()], {})


def _write_synthetic_camus(root: Path, s: Any) -> Path:
    from coreecho_jax.data.synthetic.camus import write_camus_dataset

    return write_camus_dataset(root, n_patients=int(s.n_videos), seed=int(s.seed), size=int(s.size))


def _camus_protocol(scheme: str, n_folds: int) -> str | None:
    if scheme != "split_files" or n_folds != 1:
        return None
    return (
        "1 fold, not a 10-fold cross-validation: data.folds = split_files and the split files hold one "
        "split (the 2023 release's subgroup_{training,validation,testing}.txt), whose testing list is "
        "reported"
    )


#: The paper's CAMUS rows (Table 4).
CAMUS_PAPER_ROWS = {
    "Scratch": {"good_medium/corr": 0.714, "good_medium/mae": 6.20, "poor/corr": 0.538, "poor/mae": 8.28},
    "MLP probing, CoReEcho": {
        "good_medium/corr": 0.730,
        "good_medium/mae": 6.28,
        "poor/corr": 0.570,
        "poor/mae": 8.42,
    },
    "Fine-tuning, CoReEcho": {
        "good_medium/corr": 0.807,
        "good_medium/mae": 5.29,
        "poor/corr": 0.693,
        "poor/mae": 6.81,
    },
}

#: Which of our CAMUS rows the paper's are set against, and why (results.json and table.md say it).
CAMUS_COMPARISON = (
    "The paper does not say whether its CAMUS numbers are means over the 10 folds or values pooled over "
    "all patients. We compare them with our mean over folds, because the paper's HMC-QU protocol follows "
    "its reference [21], whose code reports the mean of per-fold metrics. The pooled row (one r and one "
    "MAE over every cross-validated patient) is printed beside it: it is the steadier value where a fold "
    "holds few patients of a group (Poor: about 10 per fold of 50)."
)

CAMUS = register(
    Task(
        name="camus",
        title="CAMUS",
        kind=KINDS["regression"],
        read=_read_camus,
        frames=lambda record, selection: record.frames(),  # grey [F, H, W], ED -> ES
        label=lambda record: (float(record.ef), str(record.quality)),
        frame_selection=lambda data_config: "",
        write_synthetic=_write_synthetic_camus,
        describe_data=lambda d: f"data.view = {str(d.view)!r}",
        headline="all/mae",
        baseline_label="train-mean EF baseline",
        columns={
            "good_medium/corr": "G&M corr",
            "good_medium/mae": "G&M MAE",
            "poor/corr": "P corr",
            "poor/mae": "P MAE",
            "all/corr": "all corr",
            "all/mae": "all MAE",
        },
        paper_rows=CAMUS_PAPER_ROWS,
        comparison=CAMUS_COMPARISON,
        pooled_rows=True,
        groups=transfer_eval.QUALITY_GROUPS,
        protocol_note=_camus_protocol,
    )
)


# ------------------------------------------------------------------------------------------ HMC-QU


def cycle_frames(data_config: Any) -> str:
    """HMC-QU's frame selection (``data.cycle_frames``; :meth:`HmcQuRecord.frame_indices`)."""
    value = str(data_config.get("cycle_frames", "inclusive"))
    if value not in hmcqu.CYCLE_FRAMES:
        raise ConfigError(f"data.cycle_frames must be one of {hmcqu.CYCLE_FRAMES}, got {value!r}")
    return value


def _read_hmcqu(data_config: Any, root: Path) -> Source:
    on_error = str(data_config.on_error)
    ds = hmcqu.read_hmcqu(root, str(data_config.view), subset=str(data_config.subset), on_error=on_error)
    fold_file = str(data_config.fold_file) or None
    if fold_file is None and data_config.synthetic.enabled and data_config.folds == "shipped":
        from coreecho_jax.data.synthetic.hmcqu import FOLD_FILE

        fold_file = str(root / FOLD_FILE)  # the synthetic set's own stratified folds
    folds = ds.folds(
        str(data_config.folds),
        fold_file=fold_file,
        n_folds=int(data_config.n_folds),
        seed=int(data_config.fold_seed),
    )
    return Source(ds, folds, [ds.sheet, *(r.video for r in ds.records)], ds.column_mapping())


def _write_synthetic_hmcqu(root: Path, s: Any) -> Path:
    from coreecho_jax.data.synthetic.hmcqu import write_hmcqu_dataset

    return write_hmcqu_dataset(
        root,
        n_videos=int(s.n_videos),
        seed=int(s.seed),
        size=int(s.size),
        mi_segments=tuple(int(k) for k in s.mi_segments),
        mi_segment_motion=float(s.mi_segment_motion),
    )


#: The paper's HMC-QU rows (Table 5).
HMCQU_PAPER_ROWS = {
    setting: dict(zip(transfer_eval.CLASSIFICATION_METRICS, values))
    for setting, values in {
        "Scratch": (95.81, 38.57, 75.99, 84.36, 76.31),
        "MLP probing, CoReEcho": (93.05, 69.64, 87.20, 89.55, 85.18),
        "Fine-tuning, K400": (93.14, 64.64, 85.05, 88.25, 83.52),
        "Fine-tuning, CoReEcho": (92.95, 86.07, 93.55, 92.91, 90.64),
    }.items()
}

#: The same for HMC-QU.
HMCQU_COMPARISON = (
    "The paper's HMC-QU numbers follow its reference [21], whose code reports the mean of the five folds' "
    "metrics; the table's fold means are compared with them."
)

HMCQU = register(
    Task(
        name="hmcqu",
        title="HMC-QU",
        kind=KINDS["classification"],
        read=_read_hmcqu,
        frames=lambda record, selection: record.cycle(selection, color=True),  # RGB [F, H, W, 3]
        label=lambda record: (float(record.label), "MI" if record.mi else "normal"),
        frame_selection=cycle_frames,
        write_synthetic=_write_synthetic_hmcqu,
        describe_data=lambda d: f"data.subset = {str(d.subset)!r}, data.view = {str(d.view)!r}",
        headline="accuracy",
        baseline_label="majority-class baseline",
        columns={
            "sensitivity": "Sens.",
            "specificity": "Spec.",
            "precision": "Prec.",
            "f1": "F1",
            "accuracy": "Acc.",
            "auroc": "AUROC",
        },
        paper_rows=HMCQU_PAPER_ROWS,
        comparison=HMCQU_COMPARISON,
        classes=transfer_eval.MI_CLASSES,
        fold_fields="data.fold_file or data.folds",
    )
)


# ------------------------------------------------------------------------------ your own cohort


def crop_mode(data_config: Any) -> str:
    """A manifest task's frame selection: ``data.crop``, how a video is cropped to its image
    (:func:`~coreecho_jax.data.video.video_io.load_echo_video`), so that it keys the prepared clips."""
    from coreecho_jax.data.video.video_io import CROP_MODES

    value = str(data_config.get("crop", "auto"))
    if value not in CROP_MODES:
        raise ConfigError(f"data.crop must be one of {CROP_MODES}, got {value!r}")
    return value


def ef_category(ef: float) -> str:
    """The guideline category of an EF (%): ``reduced`` (< 40), ``mildly_reduced``, ``normal`` (>= 50)."""
    return categories.NAMES[int(categories.bin_index([ef])[0])]


#: A regression cohort's strata: its folds balance the EF categories, its report counts them.
EF_STRATA = manifest.Strata("EF category (< 40, 40-49, >= 50)", ef_category, categories.NAMES)


def _strata(kind: str) -> manifest.Strata:
    return EF_STRATA if kind == "regression" else manifest.BY_CLASS


def _manifest_reader(kind: str) -> Callable[[Any, Path], Source]:
    def read(data_config: Any, root: Path) -> Source:
        ds = manifest.read_manifest(root, kind, strata=_strata(kind))
        folds, how = ds.folds(
            str(data_config.folds), n_folds=int(data_config.n_folds), seed=int(data_config.fold_seed)
        )
        files = [ds.manifest, *(r.path for r in ds.records)]
        return Source(ds, folds, files, {**ds.columns, "folds": how})

    return read


def _manifest_writer(kind: str) -> Callable[[Path, Any], Path]:
    def write(root: Path, s: Any) -> Path:
        from coreecho_jax.data.synthetic.manifest import write_manifest_dataset

        return write_manifest_dataset(
            root, kind=kind, n_videos=int(s.n_videos), seed=int(s.seed), size=int(s.size)
        )

    return write


def _cohort_protocol(scheme: str, n_folds: int) -> str | None:
    if n_folds == 1:
        return "1 fold: the manifest's split column (train / val / test), whose test rows are reported"
    return (
        f"{n_folds}-fold cross-validation (data.folds = {scheme!r}: "
        + (
            "the manifest's fold column when it has one, else seeded stratified folds"
            if scheme == "auto"
            else "seeded stratified folds"
        )
        + "; preparation_report.json says which)"
    )


#: The table's note for a cohort of your own (no paper to compare with).
CUSTOM_COMPARISON = (
    "Your own cohort: no published rows to set these against; the baseline row is the trivial predictor "
    "of each fold's training videos (their mean EF, or their majority class)."
)
_EF_GROUPS = {name: (name,) for name in categories.NAMES}


def custom_task(kind: str) -> Task:
    """The record of a manifest cohort of ``kind`` ("regression": EF %, or "classification": 1 / 0)."""
    regression = kind == "regression"
    return Task(
        name=f"custom_{kind}",
        title="Cohort",
        kind=KINDS[kind],
        read=_manifest_reader(kind),
        frames=lambda record, selection: record.frames(selection),  # RGB [F, H, W, 3], cropped
        label=lambda record: (
            float(record.label),
            _strata(kind).of(record.label),
        ),  # group: class / EF category
        frame_selection=crop_mode,
        write_synthetic=_manifest_writer(kind),
        describe_data=lambda d: f"data.manifest = {str(d.manifest)!r}",
        headline="all/mae" if regression else "auroc",
        baseline_label="train-mean EF baseline" if regression else "majority-class baseline",
        columns=(
            {
                "all/corr": "r",
                "all/mae": "MAE",
                "all/rmse": "RMSE",
                "reduced/mae": "MAE EF < 40",
                "mildly_reduced/mae": "MAE EF 40-49",
                "normal/mae": "MAE EF >= 50",
            }
            if regression
            else dict(HMCQU.columns)
        ),
        paper_rows={},
        comparison=CUSTOM_COMPARISON,
        pooled_rows=regression,
        groups={**_EF_GROUPS, "all": tuple(categories.NAMES)} if regression else {},
        classes=manifest.CLASSES,
        fold_fields="the manifest's fold / split column, or data.n_folds and data.fold_seed",
        protocol_note=_cohort_protocol,
        source_field="manifest",
        source_noun="manifest CSV",
    )


CUSTOM_REGRESSION = register(custom_task("regression"))
CUSTOM_CLASSIFICATION = register(custom_task("classification"))
