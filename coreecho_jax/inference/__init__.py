"""Inference: a trained model on a user's video, with nothing of training, transfer or TensorFlow.

* :mod:`.runs`: ``load_run(config, source)``, any trained model (a CoReEcho run, ``.pth`` or imported
  folder; transfer folds through the loader :mod:`coreecho_jax.analysis.runs` registers) with the config
  that trained it.
* :mod:`.video_clips`: ``clips_for_video(config, path, k)``, a video file as the model's K clips (the
  preparation ``predict`` and Grad-CAM share).
* :mod:`.embeddings`: a split's embeddings file (``embeddings_<split>.npz`` of ``coreecho embed``).
* :mod:`.shift`: the distribution-shift score of an embedding against a run's training embeddings.
* :mod:`.weights_folder`: the weights folder (``model.safetensors``, ``config.json``, ``manifest.json``,
  ...): written by ``coreecho_jax.weights.export``, checked and loaded here (``load_run`` reads it).

``coreecho_jax.predict`` (one video's EF, its interval and shift score) is built from these; it and
this package import only models, checkpoints, evaluation and the TF-free video modules of data
(``tests/test_imports.py``).
"""
