"""What the dataset readers share: a skipped item with its reason, the skip-or-raise switch, and a
dataset class of named records (EchoNet, CAMUS, HMC-QU, your own manifest).

Nothing a reader leaves out is dropped silently: each :class:`Skipped` is listed in the reader's
report (``preparation_report.json``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Generic, Literal, NamedTuple, TypeVar

from coreecho_jax.errors import ConfigError

#: What a dataset reader does with one bad item among many: leave it out and list it, or raise.
OnError = Literal["skip", "raise"]


class Skipped(NamedTuple):
    """An item a reader left out, and why (listed in the reader's report, never dropped silently)."""

    name: str
    path: str
    reason: str


R = TypeVar("R")


class NamedRecords(Generic[R]):
    """What a reader's dataset class shares: ``len``, iteration over its ``records`` (a tuple), and
    ``dataset[name]``, the record whose ``NAME_FIELD`` attribute equals ``name`` (KeyError if none)."""

    NAME_FIELD: ClassVar[str]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[R]:
        return iter(self.records)

    def __getitem__(self, name: str) -> R:
        for r in self.records:
            if getattr(r, self.NAME_FIELD) == name:
                return r
        raise KeyError(name)


def check_on_error(on_error: str) -> None:
    if on_error not in ("skip", "raise"):
        raise ConfigError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
