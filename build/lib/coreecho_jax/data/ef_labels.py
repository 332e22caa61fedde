"""EF labels are in percent: the rule the EchoNet-Dynamic and CAMUS readers share to catch fractions."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def fractions_problem(ef: Iterable[float]) -> str | None:
    """What is wrong when every EF lies within 0-1 (fractions where percent is expected), else None.

    One value above 1 makes the set percent (an EF of 1 % or less is no real heart's)."""
    values = np.asarray(list(ef), dtype=np.float64)
    if values.size == 0 or values.max() > 1.0:
        return None
    return (
        f"every EF is within 0-1 (min {values.min():g}, max {values.max():g}): these look like "
        f"fractions, but EF must be in percent (e.g. 55.3, not 0.553)"
    )
