"""Transfer learning (the paper's Tables 4 and 5): a CoReEcho encoder, probed or fine-tuned with a fresh
head, cross-validated on another dataset. Reads data, models, steps and the evaluator through the
package's public functions.

* :mod:`.tasks`: one record per dataset (CAMUS EF, HMC-QU MI): its reader, kind, metrics, table and the
  paper's rows; a new dataset is a new record.
* :mod:`.data`: the data step: a task's download read, folded and prepared once as clips (cached).
* :mod:`.steps`: the fresh head and the training step; the tables of modes (probe / finetune) and kinds
  (regression / classification).
* :mod:`.loop`: ``coreecho train`` for a transfer config: each fold trained (resumable) and tested,
  ``results.json``, ``table.md``, ``predictions.csv``.
* :mod:`.provenance`: what a fold was computed from, so a rerun never reads back a fold of other data.
* :mod:`.report`: mean +- std over folds, pooled values, baselines and the paper's rows as a table.
"""
