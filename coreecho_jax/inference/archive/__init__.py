"""EF over an archive on Apache Beam (``coreecho predict-archive``; the optional extra apache-beam).

::

    import functools
    import coreecho_jax
    from coreecho_jax.inference.archive import ArchiveOptions, predict_archive

    load = functools.partial(coreecho_jax.from_pretrained, "weights/echonet")
    predict_archive(load, "archive/", "preds.csv", ArchiveOptions(workers=2))   # or a CSV manifest

A batch-inference pipeline on Beam: ``RunInference`` with a model handler that loads the JAX model once
per worker process (:class:`~coreecho_jax.inference.archive.transforms.EchoModelHandler`). It reads the
files ``coreecho predict-folder`` reads (a folder, recursively, or a CSV with a ``path`` column),
prepares each exactly as single-file prediction does (:func:`coreecho_jax.inference.quality.prepare`, in a
decoding process per worker), and writes ``predict-folder``'s CSV: the same columns
(:data:`coreecho_jax.inference.batch.COLUMNS`), the same row for the same file (the row of a file that
fails says why; one bad file never stops the pipeline), the same rerun rule (a file done before is
skipped). Parquet on request.

Default runner: the DirectRunner in multi-processing mode with one worker per core, on this machine.
Dataflow, Flink and Spark are the same pipeline with other pipeline options (``docs/archive.md``).

* :mod:`.run`: the driver, :func:`~coreecho_jax.inference.archive.run.predict_archive`, and the checks
  of the pipeline options (no apache-beam import at the top: this package imports without it).
* :mod:`.transforms`: the Beam transforms (imports apache-beam).
"""

from __future__ import annotations

from coreecho_jax.inference.archive.run import ArchiveOptions, predict_archive

__all__ = ["ArchiveOptions", "predict_archive"]
