"""One JAX process of the two-process test (tests/test_multihost.py): a tiny run, then its test summary.

    python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES DEVICES PORT ROOT DATA_DIR WORKDIR

Each process sees DEVICES CPU devices; the processes meet at a coordinator on localhost:PORT and run
their cross-process collectives over gloo. Every process writes ``<WORKDIR>/summary_<PROCESS_ID>.json``.
XLA flags already in the environment (e.g. faster CPU compilation) are kept.
"""

import os
import sys
from pathlib import Path


def tiny_config(root: Path, data_dir: Path):
    """The demo config cut to seconds: 4-frame 32x32 clips, one full-batch step per epoch, no dropout.

    The global batch holds every training video (8), so each step sees the same videos whatever the
    number of processes, and without dropout a run does not depend on how rows fall on devices.
    """
    from configs import demo

    c = demo.get_config()
    c.data.root = str(root)
    c.data.data_dir = str(data_dir)
    c.data.synthetic.enabled = False
    c.data.frames = 4
    c.data.image_size = 32
    c.data.shuffle_buffer = 16
    c.model.dropout = 0.0
    c.model.head_dropout = 0.0
    c.stage1.epochs = 2
    c.stage1.batch_size = 8
    c.stage1.lr_decay_epoch = 1
    c.stage2.epochs = 1
    c.stage2.batch_size = 8
    c.eval.batch_size = 4
    c.eval.bootstrap = 50
    c.run.log_every = 1
    return c


def main(argv: list[str]) -> None:
    process_id, num_processes, devices, port = (int(a) for a in argv[1:5])
    root, data_dir, workdir = (Path(a) for a in argv[5:8])
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=num_processes, process_id=process_id)
    assert jax.process_count() == num_processes and jax.device_count() == num_processes * devices

    from coreecho_jax.evaluation import results
    from coreecho_jax.train import loop

    summary = loop.train_and_evaluate(tiny_config(root, data_dir), workdir)
    results.write_json(summary, workdir / f"summary_{process_id}.json")
    jax.distributed.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv)
