"""The baseline grid as a `hydra.main` app, so Hydra's launcher plugins run its jobs.

    lhopt baseline-grid --multirun task=mlp_mnist,nqm seeds=[0],[1] chunks=4 chunk=0,1,2,3 \
        run_dir=outputs/grid hydra/launcher=joblib

Every job runs one chunk of one (task, seeds) grid. Jobs given the same run_dir share one
results store: each writes its own shard (results/store.py), and every job skips runs that any
job already finished, so a rerun of the same sweep only does what is missing. Launchers:
hydra-joblib-launcher (local processes), hydra-submitit-launcher (`submitit_slurm`, or
`submitit_local` to try it on one machine), hydra-ray-launcher. `python -m lhopt_cli.commands.hydra_app`
is the same entry point.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lhopt_cli.config.compose import conf_dir, make_run_dir, validate


@hydra.main(config_path=str(conf_dir()), config_name="baseline_grid", version_base="1.3")
def grid_job(cfg: DictConfig) -> float:
    """One job: its chunk of one grid. Returns the best final validation loss it recorded."""
    from lhopt_cli.commands import baseline_grid
    from lhopt_cli.support.report import write_grid_csv

    cfg = validate(cfg)
    if not cfg.run_dir:
        OmegaConf.set_struct(cfg, False)
        cfg.run_dir = HydraConfig.get().runtime.output_dir
        OmegaConf.set_struct(cfg, True)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun:  # Hydra keeps each job's config in its own output folder
        run_dir = Path(cfg.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = make_run_dir(cfg)
    table = baseline_grid.run(baseline_grid.plan(cfg), Path(run_dir), shard=multirun)
    if not multirun:  # in a sweep, `lhopt baseline-grid` with the same run_dir writes the table
        write_grid_csv(table, Path(run_dir) / "grid_table.csv")
    return float(table.min().min())


def check_sweep(args: list[str]) -> None:
    """Every job's config composes and plans, and the hydra/ choices exist, before any job starts:
    a bad sweep is one error line, not a Hydra report per job."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from lhopt_cli.commands import baseline_grid
    from lhopt_cli.config.compose import ConfigError, compose

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in args if a not in ("-m", "--multirun")])
    except HydraException as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for o in parsed:
            if o.key_or_group.startswith("hydra/"):
                options = loader.get_group_options(o.key_or_group)
                if str(o.value()) not in options:
                    raise ConfigError(f"unknown {o.key_or_group} '{o.value()}'; known: {', '.join(options)} "
                                      "(launchers: pip install 'lhopt-cli[joblib]' or 'lhopt-cli[slurm]')")
    GlobalHydra.instance().clear()
    plain = [o for o in parsed if not o.key_or_group.startswith("hydra")]
    values = [list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
              for o in plain]
    firsts = [f"{o.get_key_element()}={v[0]}" for o, v in zip(plain, values)]
    for i, (o, choices) in enumerate(zip(plain, values)):
        for value in choices[1:] if i else choices:  # each swept value once, the others at their first
            baseline_grid.plan(compose("baseline_grid", firsts[:i] + [f"{o.get_key_element()}={value}"] + firsts[i + 1:]))


def run_sweep(args: list[str]) -> None:
    """`lhopt baseline-grid --multirun ARGS`: check the sweep, then hand the command line to Hydra."""
    check_sweep(args)
    sys.argv = ["lhopt baseline-grid", *args]
    grid_job()


if __name__ == "__main__":
    grid_job()
