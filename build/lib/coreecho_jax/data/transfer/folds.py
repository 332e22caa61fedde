"""Cross-validation folds over named items (patients, videos): contiguous blocks and seeded stratified.

A :class:`Fold` names its items, never indexes, so that it survives a re-read of the dataset and can be
written to a run's workdir. ``test`` is the held-out set whose metrics are reported; ``val`` is a
separate validation set, empty unless the split provides one (then select epochs on it, never on
``test``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Sequence

from coreecho_jax import seeds
from coreecho_jax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class Fold:
    """One cross-validation fold.

    Attributes:
        index: 0-based fold number.
        train: names of the training items.
        test: names of the held-out items (the reported set).
        val: names of a separate validation set (empty when the split has none).
    """

    index: int
    train: tuple[str, ...]
    test: tuple[str, ...]
    val: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("train", "test", "val"):
            object.__setattr__(self, name, tuple(str(x) for x in getattr(self, name)))
        sets = {"train": set(self.train), "test": set(self.test), "val": set(self.val)}
        for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
            common = sorted(sets[a] & sets[b])
            if common:
                raise DataError(
                    f"fold {self.index}: {len(common)} items in both {a} and {b}, e.g. {common[:3]}"
                )

    def without(self, names: Iterable[str]) -> Fold:
        """The same fold with ``names`` removed from every set (e.g. items that could not be read)."""
        drop = set(names)
        keep = lambda xs: tuple(x for x in xs if x not in drop)
        return Fold(self.index, keep(self.train), keep(self.test), keep(self.val))


def _check_n_folds(n_items: int, n_folds: int) -> None:
    if n_folds < 2:
        raise ConfigError(f"n_folds must be >= 2, got {n_folds}")
    if n_items < n_folds:
        raise DataError(f"{n_items} items cannot fill {n_folds} folds")


def contiguous_folds(names: Sequence[str], n_folds: int) -> list[Fold]:
    """Folds over ``sorted(names)`` in contiguous blocks: fold k holds out ``sorted[b_k : b_{k+1})``
    with ``b_k = floor(k n / n_folds)``, and trains on the rest.

    With 500 names and 10 folds this is exactly ``[50k, 50k + 50)`` (CoReEcho's ``CAMUSTransferLearning``
    in ``coreecho/dataset.py``); for other ``n`` the block sizes differ by at most one.
    """
    ordered = sorted(str(x) for x in names)
    if len(set(ordered)) != len(ordered):
        raise DataError("contiguous_folds: names are not unique")
    n = len(ordered)
    _check_n_folds(n, n_folds)
    bounds = [k * n // n_folds for k in range(n_folds + 1)]
    return [
        Fold(k, ordered[: bounds[k]] + ordered[bounds[k + 1] :], ordered[bounds[k] : bounds[k + 1]])
        for k in range(n_folds)
    ]


def stratified_folds(names: Sequence[str], labels: Sequence[Hashable], n_folds: int, seed: int) -> list[Fold]:
    """Seeded stratified folds: each class is shuffled (``numpy`` generator of ``seed``) and dealt to
    the folds in turn, the dealing continuing across classes so fold sizes differ by at most one and
    each class's count per fold differs by at most one. Classes are taken in sorted order.
    """
    names = [str(x) for x in names]
    if len(names) != len(labels):
        raise DataError(f"stratified_folds: {len(names)} names but {len(labels)} labels")
    if len(set(names)) != len(names):
        raise DataError("stratified_folds: names are not unique")
    _check_n_folds(len(names), n_folds)
    rng = seeds.generator(seed, seeds.STRATIFIED_FOLDS)
    assignment: dict[str, int] = {}
    offset = 0
    for label in sorted(set(labels), key=repr):
        members = [n for n, lab in zip(names, labels) if lab == label]
        for j, i in enumerate(rng.permutation(len(members))):
            assignment[members[i]] = (offset + j) % n_folds
        offset += len(members)
    return folds_from_assignment(assignment, n_folds)


def folds_from_assignment(assignment: dict[str, int], n_folds: int) -> list[Fold]:
    """Folds from ``{name: held-out fold (0-based)}``; fold k trains on every other name (sorted)."""
    bad = sorted(n for n, k in assignment.items() if not 0 <= k < n_folds)
    if bad:
        raise DataError(f"fold numbers outside 0..{n_folds - 1} for {bad[:3]}")
    ordered = sorted(assignment)
    return [
        Fold(
            k,
            tuple(n for n in ordered if assignment[n] != k),
            tuple(n for n in ordered if assignment[n] == k),
        )
        for k in range(n_folds)
    ]
