"""``coreecho embed``: encoder embeddings of a split's videos, K clips each, and what they say.

    coreecho embed --config=demo --workdir=RUN [--splits=train,test] [--checkpoint=...]

For each split in ``--splits`` (default ``test``) every video is embedded at K = ``eval.n_clips`` clip
starts: the test split at the test protocol's starts (``test_start_indexes.json`` or
``data.test_start_indexes``), train and val at starts drawn from ``eval.seed`` the same way (distinct
per video). Process 0 writes, in the workdir:

* ``embeddings_<split>.npz`` (keys: :data:`coreecho_jax.inference.embeddings.NPZ_KEYS`) and ``embeddings_<split>.csv``
  (one row per video: FileName, EF, EF_pred, EF_pred_std and, with training embeddings,
  shift_distance, shift_percentile; the training videos' own scores leave themselves out).
* with test embeddings: ``analysis.json`` (:func:`continuity.analyse`; the kNN MAE and the shift
  scores need the training embeddings: this call's, or an ``embeddings_train.npz`` of the same
  checkpoint already in the workdir) and ``umap_test.png`` (:mod:`.umap_figure`'s official defaults).

Many processes: each embeds its share of the videos; predictions are gathered by
:func:`evaluator.gather_videos`, the embeddings by :func:`gather_rows`; every process ends with all
videos in file-name order.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from coreecho_jax import logs
from coreecho_jax.analysis import continuity
from coreecho_jax.data.echonet import start_indexes
from coreecho_jax.errors import ConfigError, DataError
from coreecho_jax.evaluation import multiclip
from coreecho_jax.evaluation import steps as eval_steps
from coreecho_jax.evaluation.evaluator import AllGather, gather_videos, process_allgather
from coreecho_jax.evaluation.results import json_ready, write_json
from coreecho_jax.inference.embeddings import Embeddings, cached_train
from coreecho_jax.inference.runs import load_run
from coreecho_jax.inference.shift import ShiftIndex
from coreecho_jax.train import mesh as mesh_lib
from coreecho_jax.train import steps
from coreecho_jax.train.loop import Trainer

SPLITS = ("train", "val", "test")

EmbedFn = Callable[[Mapping[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]
"""This process's eval batch -> its ``([B, K] EF predictions (%), [B, K, D] embeddings)``."""


# ---------------------------------------------------------------------------------------- gathering
def gather_rows(
    names: Sequence[str], rows: np.ndarray, *, allgather: AllGather = process_allgather
) -> tuple[list[str], np.ndarray]:
    """Every process's ``(names [n], rows [n, ...])`` on every process, sorted by name.

    The row shape may be unknown (``rows`` of shape ``[0]``) on a process that had no batch; the
    others' shape is used. Three collective calls.
    """
    rows = np.asarray(rows)
    n = len(names)
    width = max((len(x.encode()) for x in names), default=0)
    shape = rows.shape[1:] if n else ()
    sizes = allgather(np.array([n, width, len(shape), *shape, *[0] * (8 - len(shape))], np.int64))
    counts = sizes[:, 0]
    full = sizes[int(np.argmax(counts))]
    shape = tuple(int(s) for s in full[3 : 3 + full[2]])
    count, width = int(counts.max()), max(1, int(sizes[:, 1].max()))
    name_bytes = np.zeros((count, width), np.uint8)
    for i, name in enumerate(names):
        encoded = np.frombuffer(name.encode(), np.uint8)
        name_bytes[i, : encoded.size] = encoded
    padded = np.zeros((count, *shape), np.float32)
    padded[:n] = rows[:n]
    all_names, all_rows = allgather(name_bytes), allgather(padded)
    gathered = [bytes(all_names[p, i]).rstrip(b"\0").decode() for p, c in enumerate(counts) for i in range(c)]
    stacked = np.concatenate([all_rows[p, :c] for p, c in enumerate(counts)])
    order = np.argsort(np.array(gathered, dtype=object), kind="stable")
    return [gathered[i] for i in order], stacked[order]


def collect(
    embed_fn: EmbedFn,
    batches: Iterable[Mapping[str, np.ndarray]],
    split: str,
    *,
    allgather: AllGather = process_allgather,
) -> Embeddings:
    """Runs ``embed_fn`` over this process's eval batches (padded rows dropped), gathers every process."""
    local_rows: list[np.ndarray] = []

    def predict(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        prediction, embedding = embed_fn(batch)
        local_rows.append(np.asarray(embedding, np.float32)[np.asarray(batch["mask"]).astype(bool)])
        return prediction

    local = multiclip.predict_videos(predict, batches)
    videos = gather_videos(local, allgather=allgather)
    rows = np.concatenate(local_rows) if local_rows else np.zeros(0, np.float32)
    names, embeddings = gather_rows(local.filenames, rows, allgather=allgather)
    if names != videos.filenames:
        raise DataError(f"{split}: the gathered embeddings and predictions disagree on the videos")
    return Embeddings(videos, embeddings, split)


# ----------------------------------------------------------------------------------- the model side
@nnx.jit
def head_step(model: nnx.Module, embedding: jax.Array) -> jax.Array:
    """``[B, K, D]`` encoder embeddings -> ``[B, K]`` EF predictions (%) of the head (eval mode expected)."""
    b, k, d = embedding.shape
    return model.head(embedding.reshape(b * k, d)).reshape(b, k)


def embed_fn(trainer: Trainer, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> EmbedFn:
    """This process's eval batch -> its (predictions, embeddings) by ``trainer.model`` in eval mode.

    ``transform`` (e.g. a synthetic shift) changes the clips ``[B, K, T, H, W, 3]`` on the host first.
    The batch is sharded over every device of every process, as :meth:`Trainer.predict_fn` does.
    """
    trainer.model.eval()
    embed = steps.bind(eval_steps.embed_step, trainer.model)
    head = steps.bind(head_step, trainer.model)
    spec = mesh_lib.data_sharding(trainer.mesh).spec

    def fn(batch: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        video = np.asarray(batch["video"])
        if transform is not None:
            video = transform(video).astype(np.float32)
        embedding = embed(mesh_lib.shard_batch({"video": video}, trainer.mesh)["video"])
        out = multihost_utils.global_array_to_host_local_array(
            (head(embedding), embedding), trainer.mesh, (spec, spec)
        )
        return np.asarray(out[0]), np.asarray(out[1])

    return logs.first_call_compiles("embedding step", fn)


def split_starts(trainer: Trainer, split: str) -> dict:
    """The clip starts of ``split``: the test protocol's for test, drawn from ``eval.seed`` otherwise."""
    if split == "test":
        first = jax.process_index() == 0
        starts = trainer.data.test_starts() if first else None  # process 0 draws and saves them
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("coreecho_jax embed test starts")
        return starts if first else trainer.data.test_starts()
    config = trainer.config
    return start_indexes.draw_start_indexes(
        trainer.data.videos(split),
        int(config.eval.n_clips),
        int(config.data.frames),
        int(config.data.stride),
        int(config.eval.seed),
    )


def embed_split(
    trainer: Trainer,
    split: str,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    desc: str | None = None,
) -> Embeddings:
    """Every video of ``split`` embedded at :func:`split_starts` (progress bar ``desc`` on process 0)."""
    if split not in SPLITS:
        raise ConfigError(f"--splits: unknown split {split!r}; expected some of {', '.join(SPLITS)}")
    starts = split_starts(trainer, split)
    with trainer.eval_batches(split, starts, desc or f"embed {split}") as batches:
        return collect(embed_fn(trainer, transform), batches, split)


# ------------------------------------------------------------------------------------------ outputs
def write_csv(
    embeddings: Embeddings, path: str | Path, scores: Mapping[str, np.ndarray] | None = None
) -> None:
    """One row per video: FileName, EF, EF_pred, EF_pred_std (+ the ``[N]`` columns of ``scores``)."""
    v = embeddings.videos
    columns = {
        "EF": v.labels,
        "EF_pred": v.prediction,
        "EF_pred_std": v.clip_predictions.std(axis=1),
    }
    columns.update(scores or {})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["FileName", *columns])
        for i, name in enumerate(v.filenames):
            w.writerow([name, *(f"{c[i]:.4f}" for c in columns.values())])


def parse_splits(splits: str | Sequence[str] | None) -> list[str]:
    """``"train,test"`` -> ``['train', 'test']`` (default ``['test']``); ConfigError on an unknown split."""
    if splits is None:
        return ["test"]
    names = [s.strip() for s in (splits.split(",") if isinstance(splits, str) else splits) if s.strip()]
    unknown = [s for s in names if s not in SPLITS]
    if not names or unknown:
        raise ConfigError(f"--splits={splits}: expected a comma list of {', '.join(SPLITS)}")
    return list(dict.fromkeys(names))


def run_embed(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    checkpoint: str | None = None,
    splits: str | Sequence[str] | None = None,
    *,
    k: int = continuity.DEFAULT_K,
) -> dict:
    """``--mode=embed`` (see the module docstring); returns ``analysis.json``'s content (or ``{}``).
    Ends with the ``wrote: ...`` line (:func:`logs.closing`)."""
    names = parse_splits(splits)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with logs.closing(workdir):
        return _embed(config, workdir, checkpoint, names, k)


def _embed(
    config: ml_collections.ConfigDict, workdir: Path, checkpoint: str | None, names: list[str], k: int
) -> dict:
    source = Path(checkpoint or workdir).resolve()  # an absolute origin: predict finds the same
    trained = load_run(config, source)
    origin = trained.origin
    trainer = Trainer(trained.config, workdir, model=trained.model, write_metrics=False, stages=())
    first = jax.process_index() == 0
    done: dict[str, Embeddings] = {}
    for split in names:
        done[split] = embed_split(trainer, split)
        done[split].checkpoint = origin
        if first:
            done[split].save(workdir / f"embeddings_{split}.npz")
    train = done.get("train") or cached_train(workdir, origin)
    index = ShiftIndex(train.embedding, k) if train is not None else None
    if first:
        for split, e in done.items():
            # the training videos are in the index: their own scores leave themselves out
            scores = None if index is None else index.score(None if split == "train" else e.embedding)
            write_csv(e, workdir / f"embeddings_{split}.csv", scores)
    if "test" not in done:
        return {}
    test = done["test"]
    t = (train.embedding, train.videos.labels) if train is not None else (None, None)
    result = {"checkpoint": origin, **continuity.analyse(test.embedding, test.videos.labels, *t, k=k)}
    if index is not None:
        result["test_shift_percentile_median"] = float(
            np.median(index.score(test.embedding)["shift_percentile"])
        )
    if first:
        write_json(result, workdir / "analysis.json")
        from coreecho_jax.analysis import umap_figure

        umap_figure.plot_embeddings(test, workdir / "umap_test.png", title=origin)
        print(json.dumps(json_ready(result), indent=2), flush=True)
    return result
