"""A suite's members as configs: the suite's composed config, each member as Hydra overrides of
the baseline grid, and the task config its stored runs record (how stored grids are read by
member; the reading itself is results/suite_grid.py's)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from lhopt_cli.config.compose import compose
from lhopt_cli.results.store import load


def suite_config(suite: str) -> dict:
    """The suite's config (conf/suite/<suite>.yaml) as a dict; ConfigError for an unknown suite."""
    return OmegaConf.to_container(compose("evaluate", [f"suite={suite}"]).suite, resolve=True)


def member_overrides(member: dict) -> list[str]:
    """A suite member as Hydra overrides of the baseline grid: task=NAME, then task.KEY=VALUE."""
    return [f"task={member['task']}", *(f"task.{key}={json.dumps(value)}" for key, value in member["params"].items())]


def member_task_json(member: dict) -> str:
    """The task config of a suite member as its stored runs record it (validated at the protocol's points)."""
    eval_points = int(compose("train_policy", []).controller.eval_points)
    task = compose("baseline_grid", [*member_overrides(member), f"task.eval_points={eval_points}"]).task
    return json.dumps(OmegaConf.to_container(task, resolve=True), sort_keys=True)


def member_curves(suite: str, grids: Path) -> dict[str, pd.DataFrame]:
    """{member id: its curves in the stored grid of `suite` under `grids`} (StoreError for a
    damaged store, FileNotFoundError where none is stored); a member without runs maps to an empty frame."""
    curves = load(Path(grids) / suite / "results.parquet")
    return {m["id"]: curves[curves.task_params == member_task_json(m)] for m in suite_config(suite)["members"]}
