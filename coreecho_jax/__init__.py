"""coreecho-jax: CoReEcho (MICCAI 2024) in JAX/Flax NNX.

Subpackages, in the order data flows through them:

* ``data``        video readers, dataset builders, synthetic echoes, tf.data clip pipelines
                  (the only subpackage that imports TensorFlow)
* ``models``      UniFormer video encoder, regression/classification heads, ``CoReEcho``
* ``losses``      Rank-N-Contrast (``coreecho_jax.losses.rnc``) and the head losses
* ``train``       mesh helper, pure jitted step functions, the epoch loop
* ``evaluation``  inference steps, metrics with bootstrap confidence intervals, multi-clip evaluation
* ``checkpoints`` Orbax checkpoint manager and the safe PyTorch ``.pth`` importer
* ``errors``      the base classes of every error raised on purpose (one line, no traceback in ``main.py``)
* ``weights``     the weights folder's export and the Python API (:func:`from_pretrained`)

Python quick start::

    import coreecho_jax
    m = coreecho_jax.from_pretrained("weights/echonet")   # a weights folder, or a Hub id "owner/name"
    print(m.predict("a.dcm").summary)                      # EF 38 [33, 44] (90 %)

``from_pretrained`` and ``export_weights`` are imported on first use: ``import coreecho_jax`` loads no
jax (module ``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Names this package gives on first use, and the module each comes from.
_LAZY = {
    "from_pretrained": "coreecho_jax.weights.api",
    "export_weights": "coreecho_jax.weights.export",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'coreecho_jax' has no attribute {name!r}")
