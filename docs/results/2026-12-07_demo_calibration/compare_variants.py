"""The demo's EF intervals against simpler variants, on the same validation and test predictions.

    PYTHONPATH=. python docs/results/2026-12-07_demo_calibration/compare_variants.py RUN_WORKDIR

Variants: Mondrian (per predicted EF category) or pooled, normalised by the K-clip spread or constant
width. Then 2000 re-splits of the 128 validation + test videos into 64 calibration / 64 test videos: a
diagnostic of the method on this model and data with less sampling noise than the one test split (the
validation split chose the model's epoch, so this is not a clean test number).
"""

import json
import sys

import numpy as np

from configs import demo
from coreecho_jax.checkpoints import loading, saved_config
from coreecho_jax.evaluation import categories, conformal
from coreecho_jax.train import loop


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x))


def main(workdir: str) -> None:
    config = saved_config.inference_config(demo.get_config(), workdir)
    model, _ = loading.load_for_inference(config, workdir)
    trainer = loop.Trainer(config, workdir, model=model, write_metrics=False, stages=())
    val = trainer.predict_batches(trainer.data.eval_batches("val", trainer.calibration_starts()))
    test = trainer.predict_batches(trainer.data.eval_batches("test", trainer.data.test_starts()))
    out = {}
    for name, use_spread, edges, names in (
        ("mondrian_spread (ours)", True, categories.EDGES, categories.NAMES),
        ("mondrian_constant", False, categories.EDGES, categories.NAMES),
        ("pooled_spread", True, (), ("all",)),
        ("pooled_constant", False, (), ("all",)),
    ):
        sv = val.spread if use_spread else np.zeros(len(val))
        st = test.spread if use_spread else np.zeros(len(test))
        cal = conformal.fit(val.labels, val.prediction, sv, clips_per_video=3, edges=edges, names=names)
        lo, hi = cal.interval(test.prediction, st)
        bins = categories.bin_index(test.prediction)
        out[name] = {
            "val_n": cal.n,
            "quantiles": cal.quantiles,
            **conformal.coverage_report(test.labels, lo, hi, bins),
        }
    print(json.dumps(out, indent=1, default=float))
    print("median K-clip spread: val", float(np.median(val.spread)), "test", float(np.median(test.spread)))
    error = np.abs(test.labels - test.prediction)
    print("Spearman(|error|, spread) on test", float(np.corrcoef(_ranks(error), _ranks(test.spread))[0, 1]))

    y = np.r_[val.labels, test.labels]
    p = np.r_[val.prediction, test.prediction]
    s = np.r_[val.spread, test.spread]
    rng = np.random.default_rng(0)
    coverage, width, per_bin, infinite = [], [], {n: [] for n in categories.NAMES}, 0
    for _ in range(2000):
        idx = rng.permutation(len(y))
        c, t = idx[:64], idx[64:]
        cal = conformal.fit(y[c], p[c], s[c], clips_per_video=3)
        lo, hi = cal.interval(p[t], s[t])
        report = conformal.coverage_report(y[t], lo, hi, cal.bins(p[t]))
        coverage.append(report["coverage"])
        width.append(report["mean_width"])
        infinite += any(not np.isfinite(q) for q in cal.quantiles)
        for n in categories.NAMES:
            if report[f"n_{n}"]:
                per_bin[n].append((report[f"coverage_{n}"], report[f"n_{n}"]))
    print(
        "re-splits: mean coverage",
        float(np.mean(coverage)),
        "5-95 % of splits",
        np.percentile(coverage, [5, 95]).tolist(),
        "mean width",
        float(np.mean(width)),
        "share of splits with an infinite bin",
        infinite / 2000,
    )
    for n, v in per_bin.items():
        v = np.array(v)
        print(
            f"re-splits: {n} coverage (over its test videos)",
            float((v[:, 0] * v[:, 1]).sum() / v[:, 1].sum()),
        )


if __name__ == "__main__":
    main(sys.argv[1])
