"""Echo corpora: a folder tree of DICOM cines (e.g. MIMIC-IV-ECHO) or a manifest CSV -> a TFDS dataset in
the EchoNet-Dynamic record layout, prepared in-process or as an Apache Beam pipeline.

Modules, in the order a file flows:

* :mod:`.sources`     which files: a tree or a manifest -> keyed entries (key = relative path), labels, splits.
* :mod:`.guard`       a child process per worker that runs one file at a time under a time and memory limit.
* :mod:`.reading`     one file -> the video prediction would read (crop, square, 112 px, the file's frame rate),
                      its DICOM facts (UIDs, transfer syntax, regions, timing tag), or the reason it is refused.
* :mod:`.runners`     Beam pipeline options (DirectRunner multi-processing by default, others by flags),
                      checked before any work, and the shape of a split on Beam (rows as pipeline data).
* :mod:`.corpus_tfds` the TFDS builder, ``prepare_corpus`` / ``load_corpus``, the preparation report.

Only :mod:`.corpus_tfds` imports TensorFlow; the others (and this package) import neither TensorFlow nor
apache_beam at import time, so a guarded child starts light and the in-process path needs no Beam. The
synthetic corpus writer lives with the other writers (:mod:`coreecho_jax.data.synthetic.dicom_corpus`).
"""
