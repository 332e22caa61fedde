"""The subcommands of ``coreecho`` (:mod:`coreecho_jax.cli`): each a :class:`Spec`, its flags and the
one library call it makes.

* :mod:`.runs`: train, transfer, evaluate, predict, embed, data (:func:`coreecho_jax.cli.run`).
* :mod:`.experiments`: ablate (:mod:`coreecho_jax.experiments.ablate`).
* :mod:`.analysis`: gradcam, umap, shift (:mod:`coreecho_jax.analysis`).
* :mod:`.tools`: calibrate, import-weights, synthetic.
* :mod:`.archive`: predict-archive (:mod:`coreecho_jax.inference.archive`, on Apache Beam).
* :mod:`.corpus`: prepare-corpus (:mod:`coreecho_jax.data.corpus`, in process or on Apache Beam).

A module defines its flags on the ``absl.flags.FlagValues`` it is given, when the command runs; the
library code each ``run`` calls is imported inside it, so ``coreecho <command> --help`` stays quick.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import flags


@dataclasses.dataclass(frozen=True)
class Spec:
    """A subcommand.

    Attributes:
        define: defines the command's flags (not ``--config``) on the given ``FlagValues``.
        run: ``(parsed flags, config or None) -> result``: the one library call.
        config: ``"required"``, ``"optional"`` or ``"none"``: whether it takes ``--config``.
        required: the flags that must be given.
        writes: whether it writes files (then it ends with a ``wrote: ...`` line naming them); predict
            only reads its ``--workdir``.
    """

    define: Callable[[flags.FlagValues], None]
    run: Callable[[flags.FlagValues, ml_collections.ConfigDict | None], Any]
    config: str = "required"
    required: tuple[str, ...] = ()
    writes: bool = True
