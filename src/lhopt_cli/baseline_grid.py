"""The baseline grid job: for each seed, AdamW at every (learning rate, schedule), one epoch.

`run(cfg)` takes only the composed config, so the same job runs from the typer command or
under a `hydra.main` entry point (and so under Hydra's launchers).
"""
from __future__ import annotations

import hashlib
import json
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from .config import ConfigError
from .executor import resolve_workers, run_jobs
from .inner import SCHEDULES, HParams, ScheduleHook, train_one_epoch
from .progress import progress_bar
from .results.store import ResultsStore
from .tasks import Task, build_task


@dataclass(frozen=True)
class GridRun:
    run_id: str
    task_json: str
    seed: int
    lr: float
    schedule: str
    hparams_json: str  # AdamW's other hyperparameters, fixed for the grid


def task_key(task_cfg: dict) -> str:
    return hashlib.sha1(json.dumps(task_cfg, sort_keys=True).encode()).hexdigest()[:8]


def plan(cfg: DictConfig) -> list[GridRun]:
    """Every (seed, lr, schedule) run of the grid, with ids stable across invocations."""
    grid = cfg.grid
    unknown = [s for s in grid.schedules if s not in SCHEDULES]
    if unknown:
        raise ConfigError(f"unknown schedule '{unknown[0]}'; known: {', '.join(SCHEDULES)}")
    if not grid.lrs or not grid.schedules or not cfg.seeds:
        raise ConfigError("grid.lrs, grid.schedules and seeds must each list at least one value")
    if any(lr <= 0 for lr in grid.lrs):
        raise ConfigError("grid.lrs must all be positive")
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    task_json = json.dumps(task_cfg, sort_keys=True)
    fixed = {k: float(grid[k]) for k in ("beta1", "beta2", "eps", "weight_decay")} | {"clip": float(grid.clip_fraction)}
    key = task_key(task_cfg) + task_key(fixed)[:4]
    return [
        GridRun(f"{task_cfg['name']}-{key}-s{seed}-lr{lr:g}-{schedule}", task_json, int(seed), float(lr), schedule,
                json.dumps(fixed, sort_keys=True))
        for seed in cfg.seeds for lr in grid.lrs for schedule in grid.schedules
    ]


_TASK_CACHE: dict[str, Task] = {}  # one Task (and its data) per worker process


def _task(task_json: str) -> Task:
    if task_json not in _TASK_CACHE:
        _TASK_CACHE[task_json] = build_task(json.loads(task_json))
    return _TASK_CACHE[task_json]


def execute(job: GridRun) -> tuple[dict, list[dict]]:
    """Run one grid member; any exception becomes a 'failed' run rather than a crash."""
    task_cfg = json.loads(job.task_json)
    meta = {"run_id": job.run_id, "command": "baseline-grid", "method": "baseline", "task": task_cfg["name"],
            "task_params": job.task_json, "seed": job.seed, "lr0": job.lr, "schedule": job.schedule}
    try:
        task = _task(job.task_json)
        base = HParams(lr=job.lr, **json.loads(job.hparams_json))
        result = train_one_epoch(task, job.seed, ScheduleHook(job.schedule, base), base)
    except Exception as err:  # recorded, retried on resume
        detail = traceback.format_exception_only(type(err), err)[-1].strip()
        return {**meta, "status": "failed", "steps": 0, "total_steps": 0, "final_valid_loss": float("nan"),
                "wall_s": 0.0, "model_params": 0, "error": detail}, []
    per_step = {"examples": task.examples_per_step, "flops": task.flops_per_step}
    curve = [{**point, "total_steps": task.total_steps, "tokens_or_examples": point["step"] * per_step["examples"],
              "flops": point["step"] * per_step["flops"]} for point in result.curve]
    run = {**meta, "model_params": task.num_params, "status": result.status, "steps": result.steps,
           "total_steps": task.total_steps, "final_valid_loss": result.final_valid_loss, "wall_s": result.wall_s,
           "error": ""}
    return run, curve


def run(cfg: DictConfig, run_dir: Path, console: Console | None = None, jobs: list[GridRun] | None = None) -> pd.DataFrame:
    """Run (or resume) the grid into `run_dir`; returns the lr x schedule table of final losses."""
    console = console or Console(soft_wrap=True)
    jobs = plan(cfg) if jobs is None else jobs
    store = ResultsStore(run_dir)
    finished = store.finished_ids()
    todo = [job for job in jobs if job.run_id not in finished]
    if not todo:
        console.print(f"All {len(jobs)} runs are already done in {run_dir}; nothing to add.")
    else:
        if finished:
            console.print(f"Resuming: {len(jobs) - len(todo)} of {len(jobs)} runs already done, {len(todo)} to go.")
        workers = resolve_workers(int(cfg.executor.workers), len(todo))
        with progress_bar(console) as bar:
            progress = bar.add_task(f"{cfg.task.name} grid ({workers} worker{'s' * (workers > 1)})", total=len(todo))
            for _, (run_row, curve) in run_jobs(execute, todo, workers):
                store.add(run_row, curve)
                if run_row["status"] == "failed":
                    console.print(f"[red]failed[/red] {run_row['run_id']}: {run_row['error']}")
                bar.advance(progress)
    ids = {job.run_id for job in jobs}
    return grid_table(store.runs[store.runs.run_id.isin(ids)], cfg.grid.lrs, cfg.grid.schedules)


def grid_table(runs: pd.DataFrame, lrs, schedules) -> pd.DataFrame:
    """Median final validation loss over seeds, learning rates as rows and schedules as columns.

    Diverged and failed runs count as NaN; a cell is NaN when none of its seeds finished.
    """
    ok = runs[runs.status == "done"]
    table = ok.pivot_table(index="lr0", columns="schedule", values="final_valid_loss", aggfunc="median")
    return table.reindex(index=[float(lr) for lr in lrs], columns=list(schedules))
