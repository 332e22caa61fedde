"""What the model learned: embeddings and their continuity, UMAP, video Grad-CAM, distribution shift.
Reads trained models and data through the package's public functions and never trains (the paper's
ablations, which train, are :mod:`coreecho_jax.experiments`).

* :mod:`.embed`: ``coreecho embed``, encoder embeddings of a split (K clips per video, their mean) to
  ``embeddings_<split>.npz`` / ``.csv``, ``analysis.json`` and ``umap_test.png``.
* :mod:`.continuity`: Spearman of distances vs EF differences, kNN-regression MAE, local ordering.
* :mod:`.umap_figure`: UMAP coloured by EF as the official code draws it (Fig. 1: test and train
  rows, runs side by side; ``coreecho umap``).
* :mod:`.runs`: the transfer folds as trained models, registered into the one loader
  :func:`coreecho_jax.inference.runs.load_run` (CoReEcho run, ``.pth``, imported folder, transfer fold).
* :mod:`.gradcam`: video Grad-CAM of any of them (the maps); :mod:`.lv_focus` (with the measure,
  :mod:`.cam_lv`): the CAM mass in the LV; :mod:`.figures`: strips, movies, Fig. 3 and the figure
  plumbing the UMAP figure shares; :mod:`.gradcam_cli`: the command (``coreecho gradcam``).
* :mod:`.shift`: synthetic shifts for the distribution-shift score of :mod:`coreecho_jax.inference.shift`
  (kNN distance to the training embeddings, as a training percentile); :mod:`.shift_eval`: how well it
  flags them (``coreecho shift``).
"""
