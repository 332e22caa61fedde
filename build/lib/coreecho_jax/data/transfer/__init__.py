"""The transfer datasets' readers (CAMUS ``camus``, HMC-QU ``hmcqu`` with its shipped folds in
``hmcqu_folds/``), cross-validation folds (``folds``) and one clip per cardiac cycle (``cycles``).
What the transfer runs do with them lives in :mod:`coreecho_jax.transfer`."""
