"""The ``coreecho`` command: one subcommand per job, one flag style, one way to end on an error.

    coreecho <command> [--flag=value ...]       (coreecho --help lists the commands)
    coreecho <command> --help [--config=NAME]   (its flags; with a config, the config's fields)

Flags are absl's (``--name=value``, ``--name value``, ``--bool`` / ``--nobool``, ``-v 1`` for the
libraries' INFO logs); a command that takes a config takes ``--config=<name|path>[:variant]``
(:func:`coreecho_jax.configs.load`: a built-in name such as ``demo:quick`` from any directory, or a
``.py`` file) and ``--config.<field>=<value>`` overrides, parsed by ml_collections. Each subcommand's flags
live on their own ``absl.flags.FlagValues`` (:mod:`coreecho_jax.commands`), defined when it runs.

An error raised on purpose (a bad command line, config, input, checkpoint or workdir: a
:class:`~coreecho_jax.errors.CoreEchoError`) prints ``error: <line>`` for each line of its message and
exits with status 1 (:func:`fail`); anything else keeps its traceback. ``--help`` exits with status 0.

``python main.py --config=... [--mode=train|evaluate|predict|data|embed] ...`` is ``coreecho <mode> ...``
(:func:`mode_argv`). :func:`run` is the library call behind train, evaluate, predict, embed and data.
Importing this module imports no JAX or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import ml_collections
from absl import flags, logging

from coreecho_jax import config_check, configs
from coreecho_jax.errors import ConfigError, CoreEchoError

PROG = "coreecho"
HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")
MODES = ("train", "evaluate", "predict", "data", "embed")  # main.py's --mode values: these commands


class UsageError(ConfigError):
    """A command line the command cannot read: an unknown command or flag, a missing or bad value."""


class MissingDependencyError(CoreEchoError, ImportError):
    """A command needs a package of an extra the install left out (the slim install has no TensorFlow)."""


#: The extra that brings each optional top-level module (pyproject.toml's optional-dependencies).
EXTRAS = {
    "tensorflow": "train",
    "tensorflow_datasets": "train",
    "tensorboard": "train",
    "pandas": "train",
    "importlib_resources": "train",
    "matplotlib": "train",
    "SimpleITK": "transfer",
    "openpyxl": "transfer",
    "PIL": "transfer",
    "umap": "analysis",
    "apache_beam": "beam",
}


def missing_dependency(error: ModuleNotFoundError, command: str) -> MissingDependencyError | None:
    """The error to print when ``command`` needs a module of an extra that is not installed; None when the
    missing module is none of the extras' (a bug or a broken install: its traceback stays)."""
    top = (error.name or "").split(".")[0]
    if top not in EXTRAS:
        return None
    return MissingDependencyError(
        f"coreecho {command} needs {top}, which this install lacks: pip install "
        f'"coreecho-jax[{EXTRAS[top]}]" (or [all]; docs/install.md lists the extras)'
    )


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: its name, the :mod:`coreecho_jax.commands` module whose ``SPECS`` holds its
    :class:`~coreecho_jax.commands.Spec`, a one-line summary, an example."""

    name: str
    module: str
    summary: str
    example: str

    def spec(self):
        module = importlib.import_module(f"coreecho_jax.commands.{self.module}")
        return module.SPECS[self.name]


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "train",
            "runs",
            "train on a config: EchoNet (both stages, then the test split) or CAMUS/HMC-QU (cross-validation)",
            "coreecho train --config=demo --workdir=/tmp/coreecho_demo",
        ),
        Command(
            "transfer",
            "runs",
            "cross-validate a transfer config (CAMUS, HMC-QU): train with a check that the config is one",
            "coreecho transfer --config=camus_demo:quick --workdir=/tmp/camus",
        ),
        Command(
            "evaluate",
            "runs",
            "test a trained run or checkpoint on the config's test split (metrics, predictions, calibration)",
            "coreecho evaluate --config=demo --workdir=/tmp/eval --checkpoint=/tmp/coreecho_demo",
        ),
        Command(
            "predict",
            "runs",
            "EF of one video file (AVI, MP4, DICOM) with its spread over clips (and interval if calibrated)",
            "coreecho predict --config=demo --checkpoint=/tmp/coreecho_demo --video=clip.dcm",
        ),
        Command(
            "predict-folder",
            "runs",
            "EF of every video in a folder or a CSV, one CSV row each with interval, quality flags, errors",
            "coreecho predict-folder --weights=/weights/echonet --input=/data/echoes --out=preds.csv",
        ),
        Command(
            "predict-archive",
            "archive",
            "predict-folder's rows computed on Apache Beam (RunInference; DirectRunner, Dataflow, Flink, Spark)",
            "coreecho predict-archive --weights=/weights/echonet --input=/data/echoes --out=preds.csv --workers=2",
        ),
        Command(
            "prepare-corpus",
            "corpus",
            "prepare a DICOM tree or manifest once into a TFDS dataset, in this process or on Apache Beam",
            "coreecho prepare-corpus --source=/data/mimic-iv-echo/files --data_dir=/data/tfds --beam --workers=8",
        ),
        Command(
            "embed",
            "runs",
            "encoder embeddings of splits, their continuity numbers and UMAP pictures",
            "coreecho embed --config=demo --workdir=/tmp/coreecho_demo --splits=train,test",
        ),
        Command(
            "data",
            "runs",
            "prepare a config's dataset and print what was read (summary, one batch or the folds)",
            "coreecho data --config=demo:quick --workdir=/tmp/coreecho_quick",
        ),
        Command(
            "ablate",
            "experiments",
            "the paper's ablation tables (Tables 2 and 3) as runs of the training loop, with seeds",
            "coreecho ablate --config=demo:quick --workdir=/tmp/ablate --table=3 --seeds=1",
        ),
        Command(
            "gradcam",
            "analysis",
            "Grad-CAM maps, pictures and LV-focus numbers of one or several trained models",
            "coreecho gradcam --checkpoint=/tmp/coreecho_demo --video=clip.avi --out=/tmp/cam",
        ),
        Command(
            "umap",
            "analysis",
            "one UMAP figure of the embeddings of several runs (after coreecho embed)",
            "coreecho umap --runs=/tmp/run_a,/tmp/run_b --out=/tmp/umap.png",
        ),
        Command(
            "shift",
            "analysis",
            "how well the shift score flags synthetic shifts of the test split (shift_eval.json)",
            "coreecho shift --config=demo --workdir=/tmp/coreecho_demo",
        ),
        Command(
            "calibrate",
            "tools",
            "fit EF intervals on the predictions of a coreecho evaluate run (calibration.json)",
            "coreecho calibrate --workdir=/tmp/eval --out=/weights/calibration.json",
        ),
        Command(
            "import-weights",
            "tools",
            "convert a PyTorch UniFormer/CoReEcho .pth (read without torch) to an Orbax folder",
            "coreecho import-weights --pth=uniformer_small_k400_16x8.pth --out=/weights/k400",
        ),
        Command(
            "export-weights",
            "tools",
            "write a weights folder (safetensors, config, calibration, model card) from a run or a .pth",
            "coreecho export-weights --source=/tmp/coreecho_demo --out=/weights/demo",
        ),
        Command(
            "synthetic",
            "tools",
            "write a synthetic dataset (EchoNet-Dynamic layout, a CAMUS / HMC-QU download, a DICOM corpus)",
            "coreecho synthetic --dataset=echonet --root=/tmp/synthetic --n=64",
        ),
    )
}


# ----------------------------------------------------------------------------------------- the parsing
@dataclasses.dataclass
class Invocation:
    """A parsed command line: the command, its flags (``flags.config``: the config with its overrides,
    when the command takes one) and the config's override names."""

    command: Command
    spec: Any
    flags: flags.FlagValues
    config: ml_collections.ConfigDict | None
    overrides: list[str]

    def run(self) -> Any:
        """Runs the command; returns what its library call returns. A command that writes (a
        :data:`OUTPUT_FLAGS` flag) ends with the ``wrote: ...`` line (:func:`coreecho_jax.logs.closing`)."""
        from coreecho_jax import logs

        roots = [self.flags[n].value for n in OUTPUT_FLAGS if n in self.flags and self.flags[n].value]
        if not roots or not self.spec.writes:
            return self.spec.run(self.flags, self.config)
        with logs.closing(*roots):
            return self.spec.run(self.flags, self.config)


#: The flags that name where a command writes (the roots its closing ``wrote: ...`` line lists).
OUTPUT_FLAGS = ("workdir", "out", "root", "data_dir")


def config_overrides(argv: Sequence[str], flag: str = "config") -> tuple[str | None, list[str]]:
    """The ``--config`` value and the ``--config.<name>`` override names in ``argv``.

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


def _take_config(args: list[str]) -> tuple[str | None, list[str]]:
    """``args`` without its ``--config=<spec>`` (or ``--config <spec>``), and that spec (the last one)."""
    spec, rest, i = None, [], 0
    while i < len(args):
        if m := re.match(r"^--?config(=(.*))?$", args[i]):
            if m.group(1):
                spec = m.group(2)
            elif i + 1 < len(args):
                spec, i = args[i + 1], i + 1
            else:
                raise UsageError("--config: needs a value, e.g. --config=demo or --config=configs/demo.py")
            i += 1
            continue
        rest.append(args[i])
        i += 1
    return spec, rest


def command(name: str) -> Command:
    """The command called ``name``, or a UsageError naming the nearest one."""
    if name in COMMANDS:
        return COMMANDS[name]
    near = difflib.get_close_matches(name, list(COMMANDS), n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    raise UsageError(f"unknown command {name!r}{hint} (commands: {', '.join(COMMANDS)}; see {PROG} --help)")


def load_config(spec: Any, value: str | None, overrides: list[str]) -> ml_collections.ConfigDict | None:
    """The config ``--config=<value>`` names, its overrides checked against its fields (a ConfigError
    with "did you mean" per unknown field); None for a command without one."""
    if value is None:
        if spec.config == "required":
            raise UsageError(
                f"--config is required: a built-in name ({', '.join(configs.names())}), optionally "
                "with :variant, or a path to a .py file"
            )
        if overrides:
            raise UsageError(f"--config.{overrides[0]}: needs --config=<name|path> first")
        return None
    if spec.config == "none":
        raise UsageError("--config: this command takes no config")
    config = configs.load(value)
    config_check.check_overrides(config, overrides)
    return config


def parse(argv: Sequence[str]) -> Invocation:
    """``argv`` = ``[command, flags...]`` read into an :class:`Invocation`; absl's own flags (``-v``,
    ``--verbosity``, ...) are set on ``absl.flags.FLAGS``.

    Raises:
        UsageError: no or an unknown command, an unknown flag, a bad or missing value, an argument that
            is no flag.
        ConfigError: the config cannot be loaded, an override names no field of it.
    """
    if not argv:
        raise UsageError(f"no command given (commands: {', '.join(COMMANDS)}; see {PROG} --help)")
    cmd = command(argv[0])
    spec = cmd.spec()
    value, rest = _take_config(list(argv[1:]))
    _, overrides = config_overrides(rest)
    config = load_config(spec, value, overrides)
    fv = flags.FlagValues()
    spec.define(fv)
    if config is not None:
        from ml_collections import config_flags

        config_flags.DEFINE_config_dict(
            "config", config, "The config.", flag_values=fv, lock_config=True, sys_argv=[PROG, *rest]
        )
    try:
        unparsed = fv([PROG, *rest], known_only=True)
        leftover = flags.FLAGS(unparsed, known_only=False)[1:]  # absl's own flags: -v, --verbosity, ...
    except flags.UnrecognizedFlagError as e:
        raise UsageError(_unknown_flag(e.flagname, e.flagvalue, fv)) from None
    except flags.Error as e:
        raise UsageError(_bad_value(str(e))) from None
    if leftover:
        raise UsageError(
            f"unexpected argument {leftover[0]!r}: {PROG} {cmd.name} takes --name=value flags only"
        )
    missing = [name for name in spec.required if fv[name].value in (None, "", [])]
    if missing:
        raise UsageError("\n".join(f"--{n} is required: {fv[n].help}" for n in missing))
    return Invocation(cmd, spec, fv, fv["config"].value if config is not None else None, overrides)


def _bad_value(message: str) -> str:
    """absl's message on a bad flag value, in the words of the project's other errors."""
    message = re.sub(r"invalid literal for int\(\) with base 10: .*", "expected an integer", message)
    message = re.sub(r"could not convert string to float: .*", "expected a number", message)
    return message.removeprefix("flag ")


def _unknown_flag(name: str, value: str, fv: flags.FlagValues) -> str:
    known = [n for n in fv if not n.startswith("config.")] + ["verbosity"]
    near = difflib.get_close_matches(name.removeprefix("no"), known, n=1)
    hint = f"; did you mean --{near[0]}?" if near else ""
    return f"--{name}: unknown flag{hint} (the command's --help lists its flags)"


def mode_argv(args: Sequence[str]) -> list[str]:
    """``main.py``'s command line as ``coreecho``'s: ``--mode=<m>`` (default ``train``) becomes the command."""
    mode, rest, i = "train", [], 0
    args = list(args)
    while i < len(args):
        if m := re.match(r"^--?mode(=(.*))?$", args[i]):
            if m.group(1):
                mode = m.group(2)
            elif i + 1 < len(args):
                mode, i = args[i + 1], i + 1
            i += 1
            continue
        rest.append(args[i])
        i += 1
    if mode not in MODES:
        raise UsageError(f"--mode={mode}: unknown mode; expected one of {', '.join(MODES)}")
    return [mode, *rest]


# -------------------------------------------------------------------------------------------- the help
def usage() -> str:
    """``coreecho --help``: the commands, one line each, and how configs are named."""
    width = max(map(len, COMMANDS))
    lines = [
        f"usage: {PROG} <command> [--flag=value ...]",
        "",
        "CoReEcho (MICCAI 2024) in JAX: EF regression from echocardiogram videos. Commands:",
        *(f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS.values()),
        "",
        f"{PROG} <command> --help lists a command's flags; with --config=NAME also the config's fields.",
        f"Configs: --config=<name|path.py>[:variant] (built-in: {', '.join(configs.names())}), then",
        "--config.<field>=<value> to override a field. -v 1 shows the libraries' INFO logs.",
        "",
        "Examples:",
        *(f"  {COMMANDS[n].example}" for n in ("data", "train", "predict")),
    ]
    return "\n".join(lines)


def command_help(cmd: Command, argv: Sequence[str]) -> str:
    """``coreecho <command> --help [--config=<spec>]``: usage, summary, example, flags, config fields."""
    spec = cmd.spec()
    fv = flags.FlagValues()
    spec.define(fv)
    value, _ = _take_config([a for a in argv if a not in HELP_FLAGS])
    lines = [f"usage: {PROG} {cmd.name} [--flag=value ...]", "", f"{cmd.summary}.", f"example: {cmd.example}"]
    lines += ["", "flags:"]
    if spec.config != "none":
        need = "required" if spec.config == "required" else "optional"
        lines += [
            f"  --config: <name|path.py>[:variant] ({need}); built-in: {', '.join(configs.names())}",
            "  --config.<field>=<value>: override a field of the config (see below)",
        ]
    for flag in [f for group in fv.flags_by_module_dict().values() for f in group]:
        mark = " (required)" if flag.name in spec.required else ""
        default = "" if flag.default in (None, "") or mark else f" (default: {flag.default_as_str})"
        kind = "" if flag.boolean else "=VALUE"
        lines.append(f"  --{flag.name}{kind}: {flag.help}{mark}{default}")
    lines.append("  -v N, --verbosity=N: log level; -v 1 shows the libraries' INFO logs")
    if spec.config != "none" and value is not None:
        lines += ["", *config_fields(value)]
    elif spec.config != "none":
        lines += ["", f"{PROG} {cmd.name} --help --config=NAME also lists the fields of config NAME."]
    return "\n".join(lines)


def config_fields(value: str) -> list[str]:
    """The help's listing of the config ``value`` names: every field, its value and its comment."""
    config = configs.load(value)
    comments = configs.field_comments(value)
    lines = [f"config {value} (override a field with --config.<field>=<value>):"]
    for name, field in _leaves(config):
        comment = comments.get(name)
        lines.append(f"  {name} = {field!r}" + (f"  # {comment}" if comment else ""))
    return lines


def _leaves(config: ml_collections.ConfigDict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append((prefix + key, value))
    return out


# ---------------------------------------------------------------------------------------- the command
def fail(error: CoreEchoError) -> NoReturn:
    """Prints ``error: <line>`` for each line of the message to stderr and exits with status 1: how every
    command ends on an error raised on purpose."""
    lines = str(error).splitlines() or [type(error).__name__]
    sys.stderr.write("".join(f"error: {line}\n" for line in lines))
    sys.exit(1)


def _configure_logs() -> None:
    """The command's log (:func:`coreecho_jax.logs.configure`): quiet unless ``-v`` asks (``-v 1`` library
    INFO logs and chatter, ``-v 2`` DEBUG)."""
    from coreecho_jax import logs

    verbosity = flags.FLAGS["verbosity"]
    logs.configure(verbosity.value if verbosity.present else logs.QUIET)


def _print_help(text: str) -> int:
    """Prints ``text``; a reader that stops early (``coreecho --help | head``) is no error. Returns 0."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``coreecho`` command on ``argv`` (default ``sys.argv[1:]``): 0 after ``--help`` or a finished
    command; an error raised on purpose exits through :func:`fail` (status 1)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any data code imports TensorFlow
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in HELP_FLAGS:
            return _print_help(usage())
        if set(HELP_FLAGS) & set(argv[1:]):
            return _print_help(command_help(command(argv[0]), argv[1:]))
        invocation = parse(argv)
        _configure_logs()
        logging.info("config:\n%s", invocation.config)
        invocation.run()
    except CoreEchoError as e:
        fail(e)
    except ModuleNotFoundError as e:
        missing = missing_dependency(e, argv[0])
        if missing is None:
            raise
        fail(missing)
    return 0


# ------------------------------------------------------------------------------------- the run modes
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
    already asks JAX for its backend), checks the config, then runs ``mode``: train | evaluate |
    predict | data | embed (the commands of the same names).

    ``train`` holds the workdir (:func:`coreecho_jax.train.workdir.claim`): one run per workdir,
    resumed only under the config it started with unless ``allow_config_change``.
    """
    if mode not in MODES:
        raise ConfigError(f"--mode={mode}: unknown mode; expected one of {', '.join(MODES)}")
    if mode == "predict" and not video:
        raise ConfigError("predict needs --video=PATH (an AVI, MP4 or DICOM file)")
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
    """A CAMUS / HMC-QU config: ``train`` runs the cross-validation, ``data`` prepares the clips and
    prints what was read; the other modes belong to EchoNet-style runs."""
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
        f"{mode} is not available for a transfer config ({config.task}); use train "
        "(cross-validation, per-video predictions in predictions.csv) or data"
    )
