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
"""

__version__ = "0.1.0"
