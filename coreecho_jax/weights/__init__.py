"""Weights for people: a folder format, its export, and a Python API that loads it offline.

Quick start (a weights folder, or a Hugging Face Hub id once ``huggingface_hub`` is installed)::

    import coreecho_jax
    m = coreecho_jax.from_pretrained("weights/echonet")   # files checked against their manifest
    result = m.predict("a.dcm")                            # Prediction: EF, interval, per-clip EFs, flags
    print(result.summary)                                  # EF 38 [33, 44] (90 %)
    for r in m.predict_many(paths): print(r.path, r.ef, r.error)

* :mod:`.export`: ``export_weights(source, folder)`` from a run workdir, a CoReEcho ``best.pth`` or the
  Kinetics-400 UniFormer ``.pth``; the command ``coreecho export-weights``.
* :mod:`.api`: ``from_pretrained``, the model object (:class:`~.api.EchoModel`) and its results.
* :mod:`.hub`: a Hub id to a local snapshot (offline when ``HF_HUB_OFFLINE=1`` or ``local_files_only``).
* :mod:`.card`: the model card.

The format itself (files, manifest, loading) is :mod:`coreecho_jax.inference.weights_folder`, below
this package, so that ``predict --checkpoint=FOLDER`` reads it too.
"""
