"""The baseline grid job: for each seed, AdamW at every (learning rate, schedule), one epoch.

`plan(cfg)` checks the composed config and turns it into a GridPlan; `run(plan)` runs from the plan
alone, so the same job runs from the typer command or under a `hydra.main` entry point (and so
under Hydra's launchers).
"""
from __future__ import annotations

import hashlib
import json
import math
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from lhopt_cli.config.compose import ConfigError
from lhopt_cli.support.executor import resolve_workers, run_jobs
from lhopt_cli.support import scheduling
from lhopt_cli.inner import SCHEDULES, HParams, RunResult, ScheduleHook, train_one_epoch
from lhopt_cli.inner.batched import train_batched
from lhopt_cli.support.progress import progress_bar
from lhopt_cli.results.store import ResultsStore
from lhopt_cli.tasks import Task, build_task
from lhopt_cli.support.threads import on_run_threads

# The stored reference grids of the suites (scripts/suites/make_reference_grids.py), in a source checkout
STORED_GRIDS = Path(__file__).resolve().parents[3] / "benchmarks" / "grids"


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


@dataclass(frozen=True)
class GridPlan:
    """A checked grid: every (seed, lr, schedule) run of its chunk (`jobs`, ids stable across
    invocations), the table's rows (`lrs`: the paper's and the extended, sorted) and columns
    (`schedules`), how the runs are spread (executor.workers, path, members), and the shard of
    the shared store a multirun job writes (its task, seeds and chunk)."""

    jobs: tuple[GridRun, ...]
    task_name: str
    lrs: tuple[float, ...]
    schedules: tuple[str, ...]
    workers: int
    path: str
    members: int
    shard: str


def require_local_executor(executor_name: str) -> None:
    """Grids run on local processes; executor=ray is train-policy's (grids spread with --multirun)."""
    if executor_name != "local":
        raise ConfigError(f"executor={executor_name} runs train-policy's rollout workers; spread a grid with "
                          "`lhopt baseline-grid --multirun ... hydra/launcher=joblib|submitit_slurm|ray`")


def plan(cfg: DictConfig) -> GridPlan:
    """The grid's pre-flight: the composed config (or a grid folder's config.yaml) checked and
    planned. Raises ConfigError (one line) for unknown schedules, empty or non-positive lrs, a
    chunk outside its chunks, or a non-local executor."""
    grid = cfg.grid
    unknown = [s for s in grid.schedules if s not in SCHEDULES]
    if unknown:
        raise ConfigError(f"unknown schedule '{unknown[0]}'; known: {', '.join(SCHEDULES)}")
    if not grid.lrs or not grid.schedules or not cfg.seeds:
        raise ConfigError("grid.lrs, grid.schedules and seeds must each list at least one value")
    extended_lrs = [float(lr) for lr in grid.get("extended_lrs") or []]
    chosen = grid.get("extended_schedules")  # null: every schedule; []: no extended runs
    extended_schedules = list(grid.schedules if chosen is None else chosen)
    unknown = [s for s in extended_schedules if s not in SCHEDULES]
    if unknown:
        raise ConfigError(f"grid.extended_schedules: unknown schedule '{unknown[0]}'; known: {', '.join(SCHEDULES)}")
    bad = [lr for lr in [*map(float, grid.lrs), *extended_lrs] if not 0 < lr < math.inf]
    if bad:
        raise ConfigError(f"grid.lrs and grid.extended_lrs must all be positive and finite (got {bad[0]})")
    require_local_executor(cfg.executor.get("name", "local"))
    if cfg.executor.path not in scheduling.PATHS or cfg.executor.members < 1:
        raise ConfigError(f"executor.path must be one of {', '.join(scheduling.PATHS)} and executor.members >= 1")
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    task_json = json.dumps(task_cfg, sort_keys=True)
    fixed = {k: float(grid[k]) for k in ("beta1", "beta2", "eps", "weight_decay")} | {"clip": float(grid.clip_fraction)}
    chunk, chunks = int(cfg.get("chunk", 0)), int(cfg.get("chunks", 1))
    if chunks < 1 or not 0 <= chunk < chunks:
        raise ConfigError(f"chunk must be in [0, chunks) and chunks >= 1 (got chunk={chunk}, chunks={chunks})")
    key = task_key(task_cfg) + task_key(fixed)[:4]
    settings = grid_settings(grid.lrs, grid.schedules, extended_lrs, extended_schedules)
    runs = [
        GridRun(f"{task_cfg['name']}-{key}-s{seed}-lr{lr:g}-{schedule}", task_json, int(seed), float(lr), schedule,
                json.dumps(fixed, sort_keys=True))
        for seed in cfg.seeds for lr, schedule in settings
    ]
    seeds = "_".join(str(s) for s in cfg.seeds)
    return GridPlan(jobs=tuple(runs[chunk::chunks]),  # interleaved, so every chunk mixes cheap and costly runs
                    task_name=str(task_cfg["name"]), lrs=tuple(sorted({float(lr) for lr in [*grid.lrs, *extended_lrs]})),
                    schedules=tuple(grid.schedules), workers=int(cfg.executor.workers), path=str(cfg.executor.path),
                    members=int(cfg.executor.members),
                    shard=f"{task_cfg['name']}-{task_key(task_cfg)}-s{seeds}-c{chunk}of{chunks}")


def grid_settings(lrs, schedules, extended_lrs=(), extended_schedules=None) -> list[tuple[float, str]]:
    """The grid's (learning rate, schedule) settings: every lr of `lrs` with every schedule, then
    each lr of `extended_lrs` not already there with `extended_schedules` (default: every schedule),
    so a wide lr range can cost fewer runs outside the paper's five."""
    settings = [(float(lr), s) for lr in lrs for s in schedules]
    extra = list(schedules if extended_schedules is None else extended_schedules)
    settings += [(float(lr), s) for lr in extended_lrs for s in extra if (float(lr), s) not in settings]
    return settings


_TASK_CACHE: dict[str, Task] = {}  # one Task (and its data) per worker process


def cached_task(task_json: str) -> Task:
    """The Task of a task config given as JSON, built once per process."""
    if task_json not in _TASK_CACHE:
        _TASK_CACHE[task_json] = build_task(json.loads(task_json))
    return _TASK_CACHE[task_json]


def _meta(job: GridRun) -> dict:
    return {"run_id": job.run_id, "command": "baseline-grid", "method": "baseline",
            "task": json.loads(job.task_json)["name"], "task_params": job.task_json, "seed": job.seed,
            "lr0": job.lr, "schedule": job.schedule}


def result_rows(meta: dict, task: Task, result: RunResult) -> tuple[dict, list[dict]]:
    """A finished run as the store's run row and curve rows (`meta`: run_id, method, seed, ...)."""
    curve = [{**point, "total_steps": task.total_steps, "tokens_or_examples": point["step"] * task.examples_per_step,
              "flops": point["step"] * task.flops_per_step} for point in result.curve]
    run = {**meta, "model_params": task.num_params, "status": result.status, "steps": result.steps,
           "total_steps": task.total_steps, "final_valid_loss": result.final_valid_loss, "wall_s": result.wall_s,
           "error": ""}
    return run, curve


def _failed(job: GridRun, err: Exception) -> tuple[dict, list[dict]]:
    detail = traceback.format_exception_only(type(err), err)[-1].strip()
    return {**_meta(job), "status": "failed", "steps": 0, "total_steps": 0, "final_valid_loss": float("nan"),
            "wall_s": 0.0, "model_params": 0, "error": detail}, []


def execute(chunk: list[GridRun]) -> list[tuple[dict, list[dict]]]:
    """Run a chunk of grid members (of one task): batched when it has several, else alone.

    Any exception becomes 'failed' runs rather than a crash; they are retried on resume.
    """
    try:
        task = cached_task(chunk[0].task_json)
        bases = [HParams(lr=job.lr, **json.loads(job.hparams_json)) for job in chunk]
        hooks = [ScheduleHook(job.schedule, base) for job, base in zip(chunk, bases)]
        if len(chunk) == 1:
            results = [train_one_epoch(task, chunk[0].seed, hooks[0], bases[0])]
        else:
            results = train_batched(task, [job.seed for job in chunk], hooks, bases)
    except Exception as err:  # recorded, retried on resume
        return [_failed(job, err) for job in chunk]
    return [result_rows(_meta(job), task, result) for job, result in zip(chunk, results)]


@on_run_threads  # the whole command on the runs' thread count (docs/method.md)
def run(plan: GridPlan, run_dir: Path, console: Console | None = None, jobs: list[GridRun] | None = None,
        shard: bool = False) -> pd.DataFrame:
    """Run (or resume) the plan's grid into `run_dir` (only `jobs` of it, when given; into the
    plan's shard of the store with `shard`); returns the lr x schedule table of final losses."""
    console = console or Console(soft_wrap=True)
    jobs = list(plan.jobs) if jobs is None else jobs
    shard = plan.shard if shard else None
    store = ResultsStore(run_dir, shard)
    finished = store.finished_ids()
    todo = [job for job in jobs if job.run_id not in finished]
    if not todo:
        console.print(f"All {len(jobs)} runs are already done in {run_dir}; nothing to add.")
    else:
        if len(todo) < len(jobs):
            console.print(f"Resuming: {len(jobs) - len(todo)} of {len(jobs)} runs already done, {len(todo)} to go.")
        requested = resolve_workers(plan.workers, len(jobs))
        path = scheduling.choose(cached_task(jobs[0].task_json), len(jobs), requested, plan.path, plan.members)
        # chunks of the whole plan, so a resumed run has the batch-mates it would have had; a
        # chunk with a run to do runs whole, and only its runs not yet done are added
        work = [chunk for chunk in scheduling.chunks(jobs, path.members) if any(j.run_id not in finished for j in chunk)]
        workers = min(path.workers, len(work))
        how = f"batched, up to {path.members} members per process" if path.path == "batched" else "one run at a time"
        console.print(f"{len(todo)} runs on {workers} worker process{'es' * (workers > 1)}, {how}"
                      + (f" ({path.note})" if path.note else ""))
        with progress_bar(console) as bar:
            progress = bar.add_task(f"{plan.task_name} grid", total=len(todo))
            for _, chunk_results in run_jobs(execute, work, workers):
                results = [r for r in chunk_results if r[0]["run_id"] not in finished]
                store.add(results)
                for run_row, _ in results:
                    if run_row["status"] == "failed":
                        console.print(f"[red]failed[/red] {run_row['run_id']}: {run_row['error']}")
                bar.advance(progress, len(results))
    ids = {job.run_id for job in jobs}
    return grid_table(store.runs[store.runs.run_id.isin(ids)], plan.lrs, plan.schedules)


def curves_reusing(plan: GridPlan, run_dir: Path, stored: Path | None, console: Console) -> pd.DataFrame:
    """The curves of every run of the grid `plan`: read from the `stored` results store where it
    holds them (never written: the reference grids stay as made), the rest run (or resumed) in
    `run_dir`. With `stored` None this is `run` followed by reading `run_dir`."""
    jobs = plan.jobs
    stored_store = ResultsStore(stored) if stored is not None and (Path(stored) / "runs.parquet").exists() else None
    have = stored_store.finished_ids() if stored_store is not None else set()
    missing = [job for job in jobs if job.run_id not in have]
    if stored_store is not None:
        console.print(f"{len(jobs) - len(missing)} of {len(jobs)} grid runs read from {stored}")
    if missing:
        run(plan, run_dir, console, jobs=missing)
    ids = {job.run_id for job in jobs}
    stores = [s for s in (stored_store, ResultsStore(run_dir)) if s is not None]
    curves = pd.concat([s.curves for s in stores], ignore_index=True)  # with any shards a multirun wrote
    return curves[curves.run_id.isin(ids)].drop_duplicates(["run_id", "step"], keep="last")


def refresh_grid_reports(grid_dir: Path, note: str | None = None) -> list[Path]:
    """grid_table.csv and grid_heatmap.png of a baseline-grid folder, made again from every run its
    store now holds of the folder's grid (its config.yaml: task, lrs, schedules), over every seed
    run there: once `lhopt evaluate grid_dir=...` has added seeds, the table and heatmap agree
    with the runs. Settings outside the folder's own grid (an evaluate's extended lrs) stay out of
    its table, as they stay out of its config; `note` (what added the runs) is appended to the
    folder's lhopt.log. Returns the files written; none for a folder without grid_table.csv (not
    made by baseline-grid) or whose config.yaml is not a grid's."""
    from lhopt_cli.support.files import open_append
    from lhopt_cli.support.plots import grid_heatmap
    from lhopt_cli.support.report import write_grid_csv

    grid_dir = Path(grid_dir)
    if not (grid_dir / "grid_table.csv").is_file() or not (grid_dir / "config.yaml").is_file():
        return []
    try:
        made = plan(OmegaConf.load(grid_dir / "config.yaml"))
    except Exception:  # not a baseline-grid config: its files are left as they are
        return []
    jobs = made.jobs
    runs = ResultsStore(grid_dir).runs
    runs = runs[runs.task_params == jobs[0].task_json]
    settings = {(float(job.lr), job.schedule) for job in jobs}
    runs = runs[[(float(lr), schedule) in settings for lr, schedule in zip(runs.lr0, runs.schedule)]]
    if runs.empty:
        return []
    lrs = sorted({float(job.lr) for job in jobs})
    table = grid_table(runs, lrs, list(made.schedules))
    seeds = sorted({int(s) for s in runs.seed})
    title = f"{made.task_name}: final validation loss (median over seeds {seeds})"
    written = [write_grid_csv(table, grid_dir / "grid_table.csv"), grid_heatmap(table, title, grid_dir / "grid_heatmap.png")]
    if note:
        with open_append(grid_dir / "lhopt.log") as log:
            log.write(f"\n# {note}; grid_table.csv and grid_heatmap.png made again over seeds {seeds}\n")
    return written


def grid_table(runs: pd.DataFrame, lrs, schedules) -> pd.DataFrame:
    """Median final validation loss over seeds, learning rates as rows and schedules as columns.

    Diverged and failed runs count as NaN; a cell is NaN when none of its seeds finished.
    """
    ok = runs[runs.status == "done"]
    table = ok.pivot_table(index="lr0", columns="schedule", values="final_valid_loss", aggfunc="median")
    return table.reindex(index=[float(lr) for lr in lrs], columns=list(schedules))
