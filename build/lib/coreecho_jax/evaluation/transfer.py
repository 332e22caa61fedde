"""The evaluator of a transfer task (CAMUS EF, HMC-QU MI, ...): per-video outputs of one clip each, the
selection score, and each fold's and the pooled metrics beside a trivial baseline.

Two kinds, one class each, chosen by the task's record (:mod:`coreecho_jax.transfer.tasks`):

* :class:`RegressionEvaluator` (CAMUS, Table 4): the output is the prediction itself (EF %). Pearson
  correlation, MAE and RMSE for each group of ``groups`` (CAMUS: Good + Medium "G&M", Poor, all). A
  correlation needs at least :data:`MIN_CORR_PATIENTS` patients in its group (two points always give
  +-1); with fewer it is undefined (NaN, with a note). The validation score is the MAE; the baseline
  predicts the training mean (its correlation is undefined).
* :class:`ClassificationEvaluator` (HMC-QU, Table 5): the output is the sigmoid of the logit, the
  probability of the positive class (MI). Sensitivity, specificity, precision, F1, accuracy (%,
  positive = MI) and AUROC of the probability. A video is predicted positive when its probability is
  > ``threshold`` (0.5), as the paper's reference [21] does it; ``inclusive=True`` makes it >=. A ratio
  with an empty denominator (precision of a fold that predicts no MI, sensitivity of a fold with no
  MI, ...) counts as 0, as [21]'s metric library does, and is marked in ``notes``; AUROC of a fold with
  one class is undefined (NaN, with a note). The validation score is the log loss; the baseline
  predicts the majority class of the training videos (ties go to the positive class).

[21] is BioMedIA-MBZUAI/mi-classification. ``mi/a4c/models.py`` (``validation_step``) predicts
``torch.round(torch.sigmoid(logit))``: round half to even, so 0.5 -> 0 and MI means p > 0.5; its
``validation_epoch_end`` computes ``torchmetrics.Specificity / F1 / Precision / Recall / Accuracy``
of those 0/1 predictions over the fold, with torchmetrics 0.6.1 (``requirements.txt``), whose
``_reduce_stat_scores`` (``torchmetrics/functional/classification/stat_scores.py``) replaces a zero
denominator by ``zero_division=0`` and whose F-beta sets a 0 precision + recall denominator to 1
(``functional/classification/f_beta.py``): every such ratio is 0. ``mi/a4c/train.py`` reports the
mean of the five folds' values.

Predictions go through the multi-clip :class:`~coreecho_jax.evaluation.evaluator.Evaluator` with one
clip per video and no bootstrap, so they are gathered over every process in name order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from coreecho_jax.evaluation import metrics
from coreecho_jax.evaluation.evaluator import AllGather, Evaluator, PredictFn, process_allgather

#: CAMUS quality groups of the paper's table (and all patients): the groups :func:`regression_metrics`
#: reports unless told others.
QUALITY_GROUPS = {"good_medium": ("Good", "Medium"), "poor": ("Poor",), "all": ("Good", "Medium", "Poor")}
CLASSIFICATION_METRICS = ("sensitivity", "specificity", "precision", "f1", "accuracy", "auroc")
#: Fewest patients of a group for its Pearson correlation; with fewer it is undefined. Two points
#: always give +-1, and three are the fewest whose correlation is not fixed by their count.
MIN_CORR_PATIENTS = 3
#: The positive and the negative class of HMC-QU (the default names in messages and notes).
MI_CLASSES = ("MI", "normal")

#: Why each ratio metric's denominator can be empty (for the note beside a 0/0 counted as 0).
EMPTY_DENOMINATOR = {
    "sensitivity": "no {positive} among the tested videos",
    "specificity": "no {negative} video among the tested videos",
    "precision": "no video predicted {positive}",
    "f1": "no {positive} tested and none predicted",
    "accuracy": "no tested video",
}


def regression_metrics(
    labels: np.ndarray,
    predictions: np.ndarray,
    groups: Sequence[str],
    group_sets: Mapping[str, tuple[str, ...]] = QUALITY_GROUPS,
) -> dict[str, Any]:
    """``{"<group>/n", "<group>/corr", "<group>/mae", "<group>/rmse"}`` for each group of
    ``group_sets`` (``{name: the video groups it holds}``; EF %), and ``notes``: ``{metric: why it is
    undefined}`` for each NaN.

    The correlation of a group with fewer than :data:`MIN_CORR_PATIENTS` patients is NaN.
    """
    labels = np.asarray(labels, np.float64)
    predictions = np.asarray(predictions, np.float64)
    groups = np.asarray(groups)
    out: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for group, members in group_sets.items():
        sel = np.isin(groups, members)
        y, p = labels[sel], predictions[sel]
        n = int(sel.sum())
        out[f"{group}/n"] = n
        if n >= MIN_CORR_PATIENTS:
            out[f"{group}/corr"] = metrics.pearson(y, p)
            if not math.isfinite(out[f"{group}/corr"]):
                notes[f"{group}/corr"] = metrics.undefined_reason("pearson", y, p)
        else:
            out[f"{group}/corr"] = math.nan
            notes[f"{group}/corr"] = f"{n} patient(s): a correlation needs at least {MIN_CORR_PATIENTS}"
        out[f"{group}/mae"] = metrics.mae(y, p) if n else math.nan
        out[f"{group}/rmse"] = metrics.rmse(y, p) if n else math.nan
        if not n:
            notes[f"{group}/mae"] = notes[f"{group}/rmse"] = "no patient of this group"
    out["notes"] = notes
    return out


def predict_mi(probabilities: np.ndarray, threshold: float, inclusive: bool = False) -> np.ndarray:
    """0/1 predictions: positive (MI) when the probability is > ``threshold`` ([21]), or >= with
    ``inclusive``."""
    probabilities = np.asarray(probabilities, np.float64)
    above = probabilities >= threshold if inclusive else probabilities > threshold
    return above.astype(int)


def classification_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    *,
    inclusive: bool = False,
    classes: tuple[str, str] = MI_CLASSES,
) -> dict[str, Any]:
    """Sensitivity ... accuracy (%) of :func:`predict_mi`, AUROC, the confusion counts and ``notes``
    (``classes``: the positive and the negative class's names in the notes).

    A ratio with an empty denominator is 0 (as [21], module doc) and noted; AUROC without both classes
    is NaN and noted.
    """
    positive, negative = classes
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    predicted = predict_mi(probabilities, threshold, inclusive)
    tp, fp, tn, fn = metrics.classification_counts(labels, predicted)
    out: dict[str, Any] = {"n": len(labels), "tp": tp, "fp": fp, "tn": tn, "fn": fn}
    notes: dict[str, str] = {}
    for name in CLASSIFICATION_METRICS[:-1]:
        value = getattr(metrics, name)(labels, predicted)
        if math.isnan(value):  # 0/0
            value = 0.0
            why = EMPTY_DENOMINATOR[name].format(positive=positive, negative=negative)
            notes[name] = f"0/0 ({why}): counted as 0, as [21]"
        out[name] = value
    out["auroc"] = metrics.auroc(labels, probabilities)
    if math.isnan(out["auroc"]):
        notes["auroc"] = (
            f"undefined: only {positive if tp + fn else negative} videos among the {len(labels)} tested"
        )
    out["notes"] = notes
    return out


class TransferEvaluator:
    """One kind of transfer task's outputs and metrics (module doc); subclasses fill in the kind.

    Results are plain dicts: a fold's ``{"model": metrics, "baseline": metrics, <BASELINE_FIELD>: the
    baseline's constant}`` (:meth:`fold`), read back from a fold's stored predictions.
    """

    #: The key of a fold's result that holds the baseline's constant.
    BASELINE_FIELD: ClassVar[str]

    # ---------------------------------------------------------------------------- the kind's parts
    def link(self, outputs: np.ndarray) -> np.ndarray:
        """The model's outputs ``[N]`` -> the reported outputs (the prediction, or a probability)."""
        raise NotImplementedError

    def selection_score(self, labels: np.ndarray, outputs: np.ndarray) -> float:
        """Lower is better: the validation score that chooses an epoch."""
        raise NotImplementedError

    def metrics(self, labels: np.ndarray, outputs: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
        """The metrics of ``outputs`` (reported, after :meth:`link`) against ``labels``."""
        raise NotImplementedError

    def baseline(self, train_labels: np.ndarray) -> float:
        """The constant the trivial baseline predicts, from a fold's training labels."""
        raise NotImplementedError

    def stored_baseline(self, value: float) -> float | int:
        """The baseline's constant as a fold's result stores it."""
        return value

    def pooled_baseline(self, values: dict[str, Any]) -> dict[str, Any]:
        """The baseline's pooled metrics, with those a constant per fold leaves undefined marked."""
        return values

    # ---------------------------------------------------------------------------------- evaluation
    def predict(
        self,
        predict_fn: PredictFn,
        batches: Iterable[Mapping[str, np.ndarray]],
        *,
        allgather: AllGather = process_allgather,
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Names, labels and reported outputs of every process's videos (one clip each), in name order.

        ``predict_fn``: this process's eval batch -> its ``[B, 1]`` model outputs."""
        result = Evaluator(predict_fn, n_clips=1, bootstrap=0, allgather=allgather).predict(batches)
        return list(result.filenames), result.labels, self.link(result.prediction)

    def fold(
        self, labels: np.ndarray, outputs: np.ndarray, groups: Sequence[str], train_labels: np.ndarray
    ) -> dict[str, Any]:
        """One fold's metrics and its trivial baseline's, from its held-out videos' reported outputs."""
        value = self.baseline(np.asarray(train_labels, np.float64))
        return {
            "model": self.metrics(labels, outputs, groups),
            "baseline": self.metrics(labels, np.full(len(labels), value), groups),
            self.BASELINE_FIELD: self.stored_baseline(value),
        }

    def pooled(self, results: Sequence[Mapping[str, Any]]) -> tuple[dict, dict]:
        """The model's and the baseline's metrics over every tested video of the folds' ``results`` at
        once (each fold's baseline its own constant)."""
        predictions = [p for r in results for p in r["predictions"]]
        labels = np.array([p["label"] for p in predictions], np.float64)
        outputs = np.array([p["output"] for p in predictions], np.float64)
        groups = [p["group"] for p in predictions]
        constants = np.array([r[self.BASELINE_FIELD] for r in results for _ in r["predictions"]], np.float64)
        return (
            self.metrics(labels, outputs, groups),
            self.pooled_baseline(self.metrics(labels, constants, groups)),
        )


@dataclasses.dataclass(frozen=True)
class RegressionEvaluator(TransferEvaluator):
    """A regression task (EF %): metrics per group of ``groups`` (:func:`regression_metrics`)."""

    groups: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=lambda: dict(QUALITY_GROUPS))

    BASELINE_FIELD: ClassVar[str] = "train_mean_ef"

    def link(self, outputs: np.ndarray) -> np.ndarray:
        return outputs

    def selection_score(self, labels: np.ndarray, outputs: np.ndarray) -> float:
        """The mean absolute error (EF %)."""
        return float(np.mean(np.abs(outputs - labels)))

    def metrics(self, labels: np.ndarray, outputs: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
        return regression_metrics(labels, outputs, groups, self.groups)

    def baseline(self, train_labels: np.ndarray) -> float:
        """The training mean."""
        return float(train_labels.mean())

    def pooled_baseline(self, values: dict[str, Any]) -> dict[str, Any]:
        for group in self.groups:  # one constant per fold: a pooled r would only rank folds
            values[f"{group}/corr"] = math.nan
            values["notes"][f"{group}/corr"] = "the train-mean baseline predicts one constant per fold"
        return values


@dataclasses.dataclass(frozen=True)
class ClassificationEvaluator(TransferEvaluator):
    """A binary task (label 1 = the positive class): :func:`classification_metrics` at ``threshold``."""

    threshold: float = 0.5
    inclusive: bool = False
    classes: tuple[str, str] = MI_CLASSES

    BASELINE_FIELD: ClassVar[str] = "majority_class"

    def link(self, outputs: np.ndarray) -> np.ndarray:
        """Logits -> probabilities of the positive class."""
        return 1.0 / (1.0 + np.exp(-outputs))

    def selection_score(self, labels: np.ndarray, outputs: np.ndarray) -> float:
        """The log loss of the probabilities."""
        p = np.clip(outputs, 1e-7, 1 - 1e-7)
        return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))

    def metrics(self, labels: np.ndarray, outputs: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
        return classification_metrics(
            labels, outputs, self.threshold, inclusive=self.inclusive, classes=self.classes
        )

    def baseline(self, train_labels: np.ndarray) -> float:
        """The majority class (ties go to the positive class, the larger class of HMC-QU)."""
        return float(train_labels.mean() >= 0.5)

    def stored_baseline(self, value: float) -> int:
        return int(value)
