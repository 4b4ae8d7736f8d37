"""`hydra.main` entry point for the baseline grid, so Hydra's launchers can run it.

    python -m lhopt_cli.hydra_app --multirun task=mlp_mnist,cnn_mnist seeds=[0],[1]

Each job writes into its Hydra output folder unless run_dir is given. Add a launcher plugin
(hydra-joblib-launcher, hydra-submitit-launcher for SLURM, hydra-ray-launcher) and select it
with `hydra/launcher=...`; the job function is the same one `lhopt baseline-grid` calls.
"""
from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import conf_dir, make_run_dir, validate


@hydra.main(config_path=str(conf_dir()), config_name="baseline_grid", version_base="1.3")
def grid_job(cfg: DictConfig) -> float:
    """Run one grid (one task, its seeds); returns the best final validation loss."""
    from . import baseline_grid
    from .report import write_grid_csv

    cfg = validate(cfg)
    if not cfg.run_dir:
        OmegaConf.set_struct(cfg, False)
        cfg.run_dir = HydraConfig.get().runtime.output_dir
        OmegaConf.set_struct(cfg, True)
    run_dir = make_run_dir(cfg)
    table = baseline_grid.run(cfg, Path(run_dir))
    write_grid_csv(table, Path(run_dir) / "grid_table.csv")
    return float(table.min().min())


if __name__ == "__main__":
    grid_job()
