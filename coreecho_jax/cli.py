"""What ``main.py`` calls: one function per mode, each a thin wrapper over the library.

Output: absl logging for logs; ``print`` only for what a mode answers (predict's JSON; the training
loop's per-epoch line and result table come from the loop).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import ml_collections

from coreecho_jax import config_check
from coreecho_jax.errors import ConfigError, CoreEchoError

MODES = ("train", "evaluate", "predict", "data", "embed")


def config_overrides(argv: Sequence[str], flag: str = "config") -> tuple[str | None, list[str]]:
    """The ``--config`` file argument and the ``--config.<name>`` override names in ``argv``.

    Follows ml_collections' own reading of the command line (``--config.a.b=1``, ``--noconfig.a.b``,
    ``--config=file.py:arg`` or ``--config file.py``).
    """
    path = None
    names = []
    args = list(argv)
    for i, arg in enumerate(args):
        if m := re.match(rf"^-{{1,2}}{flag}(=(.*))?$", arg):
            path = m.group(2) if m.group(1) else (args[i + 1] if i + 1 < len(args) else None)
        elif m := re.match(rf"^-{{1,2}}(?:no)?{flag}\.([^=]+)", arg):
            names.append(m.group(1))
    return path, names


def check_command_line(argv: Sequence[str], flag: str = "config") -> None:
    """ConfigError when the ``--config`` file is missing or a ``--config.<name>`` names no field.

    Runs before absl parses the flags: ml_collections would stop at the first unknown field with a
    chain of tracebacks. A missing file is a ConfigError too; a ConfigError of the config file itself
    (an unknown ``file.py:variant``) comes out as it is.
    """
    path, names = config_overrides(argv, flag)
    if not path:
        return
    file, colon, arg = path.partition(":")
    if not Path(file).is_file():
        raise ConfigError(f"--{flag}={path}: no such file (expected a Python file such as configs/demo.py)")
    spec = importlib.util.spec_from_file_location(f"_{flag}_file_check", file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--{flag}={path}: not a Python file (expected a file such as configs/demo.py)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg) if colon else module.get_config()  # as ml_collections calls it
    if isinstance(config, ml_collections.ConfigDict):
        config_check.check_overrides(config, names)


def fail(error: CoreEchoError) -> NoReturn:
    """Prints ``error: <line>`` for each line of the message to stderr and exits with status 1: how the
    entry points (``main.py``, ``python -m coreecho_jax.experiments.ablate``) end on an error raised on purpose."""
    lines = str(error).splitlines() or [type(error).__name__]
    sys.stderr.write("".join(f"error: {line}\n" for line in lines))
    sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (the entry points' ``flags_parser``), after :func:`check_command_line`:
    every ``--config.<name>`` must name a config field, or the command fails with one line each."""
    from absl import app

    try:
        check_command_line(argv)
    except CoreEchoError as e:
        fail(e)
    return app.parse_flags_with_usage(argv)


def run(
    mode: str,
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    checkpoint: str | None = None,
    video: str | None = None,
    allow_config_change: bool = False,
    splits: str | None = None,
) -> dict:
    """Starts the multi-host runtime if ``run.distributed`` (the first JAX call: the config check
    already asks JAX for its backend), checks the config, then dispatches ``--mode``: train | evaluate
    | predict | data | embed.

    ``--mode=train`` holds the workdir (:func:`coreecho_jax.train.workdir.claim`): one run per workdir,
    resumed only under the config it started with unless ``allow_config_change``.
    """
    if mode not in MODES:
        raise ConfigError(f"--mode={mode}: unknown mode; expected one of {', '.join(MODES)}")
    if mode == "predict" and not video:
        raise ConfigError("--mode=predict needs --video=PATH (an AVI, MP4 or DICOM file)")
    from coreecho_jax.train import distributed

    distributed.start(config, mode=mode)
    config_check.check_config(config)
    workdir_path = Path(workdir)
    if config_check.is_transfer(config):
        return _run_transfer(mode, config, workdir_path, allow_config_change=allow_config_change)
    if mode == "train":
        from coreecho_jax.train import loop

        return loop.train_and_evaluate(config, workdir_path, allow_config_change=allow_config_change)
    if mode == "evaluate":
        from coreecho_jax.train import loop

        return loop.evaluate_checkpoint(config, workdir_path, checkpoint)
    if mode == "predict":
        from coreecho_jax import predict

        result = predict.predict_file(config, video, checkpoint or workdir_path)
        print(json.dumps(result, indent=2))
        return result
    if mode == "embed":
        from coreecho_jax.analysis import embed

        return embed.run_embed(config, workdir_path, checkpoint, splits)
    from coreecho_jax.data.echonet import inputs

    return inputs.describe(config, workdir_path)


def _run_transfer(
    mode: str, config: ml_collections.ConfigDict, workdir: Path, *, allow_config_change: bool
) -> dict:
    """A CAMUS / HMC-QU config: ``--mode=train`` runs the cross-validation, ``--mode=data`` prepares the
    clips and prints what was read; the other modes belong to EchoNet-style runs."""
    if mode == "train":
        from coreecho_jax.transfer import loop

        return loop.run_transfer(config, workdir, allow_config_change=allow_config_change)
    if mode == "data":
        from coreecho_jax.transfer import data as transfer_sets

        data = transfer_sets.prepare(str(config.task), config.data, workdir)
        print(data.source)
        if data.columns:
            print("columns: " + ", ".join(f"{k}={v}" for k, v in data.columns.items()))
        print(f"folds: {[(len(f.train), len(f.val), len(f.test)) for f in data.folds]} (train, val, test)")
        print(f"report: {workdir / transfer_sets.REPORT_FILE}")
        return {"videos": len(data.names), "folds": len(data.folds)}
    raise ConfigError(
        f"--mode={mode} is not available for a transfer config ({config.task}); use --mode=train "
        "(cross-validation, per-video predictions in predictions.csv) or --mode=data"
    )
