"""The multi-host start: ``jax.distributed.initialize()`` as the first JAX call of a run.

``start(config)`` is what every entry point calls before anything else touches JAX (the config check
asks JAX for its backend, the mesh lists the devices): once the XLA backend exists, JAX refuses to
start its distributed runtime. With ``run.distributed=False`` it does nothing.

Where the three settings come from, first found wins:

* ``run.coordinator`` (``host:port`` of process 0), ``run.num_processes``, ``run.process_id``;
* the environment: ``JAX_COORDINATOR_ADDRESS`` (JAX reads it too), ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID`` (read here: JAX 0.10 reads only the address);
* JAX's cluster detection (``jax/_src/clusters``) for whatever is still unset: SLURM (``srun``: all of
  ``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``; the
  coordinator is the step's first node at port ``61440 + SLURM_JOB_ID % 4096`` unless
  ``JAX_COORDINATOR_PORT`` is set), Open MPI 4 (``mpirun``, ``OMPI_MCA_orte_hnp_uri``), Kubernetes,
  Cloud TPU. Under SLURM and Open MPI on GPUs each process keeps only the GPU numbered by its local rank.

CPU processes exchange their collectives over gloo. Right after the start the processes compare their
configs; processes that disagree stop with one line naming the first field that differs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np

from coreecho_jax import config_check
from coreecho_jax.errors import ConfigError

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
UNSET = -1  # run.num_processes / run.process_id: from the environment

#: Config fields that may differ between the processes of one run: how each process found the others
#: (its id, and settings another process may take from the environment) and the paths of the data,
#: which a host may mount elsewhere. Every other field (and ``--mode``) must agree.
PER_PROCESS_FIELDS = ("run.coordinator", "run.num_processes", "run.process_id", "data.root", "data.data_dir")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What this process passes to ``jax.distributed.initialize``; None: left to cluster detection."""

    coordinator: str | None
    num_processes: int | None
    process_id: int | None

    def unset(self) -> list[str]:
        """The settings still unset, as a user sets them (config field and environment variable)."""
        names = {
            "coordinator": f"run.coordinator=HOST:PORT (or {ENV_COORDINATOR})",
            "num_processes": f"run.num_processes (or {ENV_NUM_PROCESSES})",
            "process_id": f"run.process_id (or {ENV_PROCESS_ID})",
        }
        return [text for key, text in names.items() if getattr(self, key) is None]


def explicit_settings(config: ml_collections.ConfigDict, environ: Mapping[str, str]) -> Settings:
    """The settings ``config.run`` and the ``JAX_*`` variables of ``environ`` give (ConfigError on a
    variable that is not what it should be); cluster detection is not consulted here."""
    coordinator = str(config_check.get_field(config, "run.coordinator", "")) or environ.get(ENV_COORDINATOR)
    if coordinator is not None and not config_check.is_host_port(coordinator):
        raise ConfigError(f"{ENV_COORDINATOR}={coordinator!r}: must be HOST:PORT, e.g. node001:61000")
    return Settings(
        coordinator or None,
        _int_setting(config, "run.num_processes", environ, ENV_NUM_PROCESSES, low=1),
        _int_setting(config, "run.process_id", environ, ENV_PROCESS_ID, low=0),
    )


def _int_setting(
    config: ml_collections.ConfigDict, field: str, environ: Mapping[str, str], variable: str, low: int
) -> int | None:
    value = config_check.get_field(config, field, UNSET)
    if value != UNSET:
        return int(value)
    text = environ.get(variable)
    if text is None:
        return None
    try:
        number = int(text)
    except ValueError:
        number = low - 1
    if number < low:
        raise ConfigError(f"{variable}={text!r}: must be an integer >= {low}")
    return number


def start(config: ml_collections.ConfigDict, *, mode: str | None = None) -> None:
    """Starts JAX's multi-host runtime when ``run.distributed`` asks for it, before any other JAX call.

    A no-op when ``run.distributed`` is False or the runtime is already up (e.g. a script that started
    it itself). Raises ConfigError, one line: a ``run.*`` field out of range, a setting that neither the
    config, the ``JAX_*`` environment nor a cluster environment gives, JAX already in use in this
    process, or (after the start) processes that disagree on the config or on ``mode``.
    """
    if not config_check.get_field(config, "run.distributed", False) or jax.distributed.is_initialized():
        return
    config_check.check_run(config)
    settings = explicit_settings(config, os.environ)
    if jax.config.jax_cpu_collectives_implementation is None:  # keep a user's choice (e.g. mpi)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(settings.coordinator, settings.num_processes, settings.process_id)
    except ValueError as e:
        if unset := settings.unset():
            raise ConfigError(
                f"run.distributed=True needs {_join(unset)}: no SLURM (srun), Open MPI (mpirun), "
                "Kubernetes or Cloud TPU environment gave them (README: Several hosts)"
            ) from None
        raise ConfigError(
            f"run.distributed=True: JAX refused the multi-host settings {settings}: {e}"
        ) from None
    except RuntimeError as e:
        if "before any JAX calls" not in str(e):  # e.g. the coordinator's port in use: JAX's own words
            raise
        raise ConfigError(
            "run.distributed=True: JAX was already in use in this process, so its multi-host runtime "
            "cannot start; call coreecho_jax.train.distributed.start(config) before any other JAX call "
            f"({e})"
        ) from None
    check_same_config(config, mode)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ------------------------------------------------------------------------------- config agreement
def comparable_record(config: ml_collections.ConfigDict, mode: str | None = None) -> dict:
    """The flat ``{field: value}`` the processes compare: the config without :data:`PER_PROCESS_FIELDS`,
    plus ``--mode`` when given."""
    from coreecho_jax.train import workdir as workdir_lib

    flat = workdir_lib.flatten(workdir_lib.config_record(config))
    for name in PER_PROCESS_FIELDS:
        flat.pop(name, None)
    if mode is not None:
        flat["--mode"] = mode
    return flat


def disagreement(records: list[dict]) -> str | None:
    """One line naming the first process whose record differs from process 0's, and how; None if all
    agree. ``records[i]`` is process ``i``'s :func:`comparable_record`."""
    reference = records[0]
    for index, record in enumerate(records[1:], start=1):
        fields = sorted(
            name for name in set(reference) | set(record) if reference.get(name) != record.get(name)
        )
        if fields:
            first = fields[0]
            more = f" (and {len(fields) - 1} more field(s))" if len(fields) > 1 else ""
            return (
                f"the processes disagree on the config: process {index} has {first}="
                f"{record.get(first, '(absent)')!r} where process 0 has {reference.get(first, '(absent)')!r}"
                f"{more}; start every process with the same --config, --config.* overrides and --mode "
                f"(only {', '.join(PER_PROCESS_FIELDS)} may differ)"
            )
    return None


def check_same_config(config: ml_collections.ConfigDict, mode: str | None = None) -> None:
    """ConfigError on every process (one line) when the processes' configs or modes differ; nothing
    with one process. Two small all-gathers: the lengths, then the padded JSON bytes."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    mine = np.frombuffer(json.dumps(comparable_record(config, mode), sort_keys=True).encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([mine.size], np.int32))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: mine.size] = mine
    rows = np.asarray(multihost_utils.process_allgather(padded))
    records = [json.loads(rows[i, : lengths[i]].tobytes()) for i in range(len(lengths))]
    if line := disagreement(records):
        raise ConfigError(line)
