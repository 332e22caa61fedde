"""ablate: the paper's ablation tables (:mod:`coreecho_jax.experiments.ablate`)."""

from __future__ import annotations

import ml_collections
from absl import flags

from coreecho_jax.commands import Spec


def _define_ablate(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        "workdir", None, "Ablation folder: runs go to <workdir>/table<k>/<row>/seed<s>.", flag_values=fv
    )
    flags.DEFINE_enum(
        "table",
        None,
        ["2", "3"],
        "The paper's table: 2 (components) or 3 (augmentation, clips).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "seeds",
        3,
        "Runs per row, seeds config.seed .. config.seed + seeds - 1 (paper: 3).",
        lower_bound=1,
        flag_values=fv,
    )
    flags.DEFINE_string(
        "init_from",
        "",
        "Table 2: Kinetics-400 UniFormer weights (.pth); without, K400 rows are skipped.",
        flag_values=fv,
    )


def _ablate(fv: flags.FlagValues, config: ml_collections.ConfigDict) -> dict:
    from coreecho_jax.experiments import ablate

    ablate.check_ablation_config(config)
    table = ablate.get_table(fv.table)
    ablate.check_user_overrides(table, list(fv["config"].override_values), fv.init_from)
    return ablate.run_table(config, fv.workdir, table.number, seeds=fv.seeds, init_from=fv.init_from)


#: The commands of this module, by name (:data:`coreecho_jax.cli.COMMANDS`).
SPECS = {
    "ablate": Spec(_define_ablate, _ablate, required=("workdir", "table")),
}
