"""Experiments that train: runs of the training loop arranged as the paper's tables.

* :mod:`.ablate`: the ablations of Tables 2 and 3 (rows of config overrides, seeds, resumable), and
  their command ``coreecho ablate``.

Above the training loop, beside :mod:`coreecho_jax.analysis` (which reads trained models and never
trains).
"""
