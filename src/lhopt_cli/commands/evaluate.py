"""The evaluate job: a policy and extra baselines against the best of the AdamW grid.

For each task: the grid (reused from `grid_dir` where it is already there; for a suite without
`grid_dir`, read from its stored reference grids, benchmarks/grids/<suite>/), one policy run
per seed (batched, from AdamW's defaults), the extra baselines; then speedups per seed
(results/speedup.py), summary.csv, the curves in results.parquet and two figures per task.
Rerunning with the same run_dir skips runs already stored.

The policy file's observation protocol fixes the decisions, statistics cadence and validation
points; the grid validates at the same points, so every curve is compared step for step.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from lhopt_cli.commands import baseline_grid
from lhopt_cli.loop.controller import default_policy_path
from lhopt_cli.config.compose import ConfigError, compose, debug_overrides
from lhopt_cli.config.suites import member_overrides
from lhopt_cli.control.actions import EVAL_START
from lhopt_cli.control.checkpoint import load_policy, policy_protocol
from lhopt_cli.control.policy import RecurrentActorCritic
from lhopt_cli.control.protocol import ObservationProtocol
from lhopt_cli.support.executor import resolve_workers, run_jobs
from lhopt_cli.support.files import atomic_write, atomic_write_text, file_in_the_way
from lhopt_cli.commands.method_runs import EXTRA_BASELINES, MethodRun
from lhopt_cli.commands.method_runs import execute as execute_method_run
from lhopt_cli.support.plots import hyperparameter_plot, learning_curve_plot
from lhopt_cli.results.speedup import NoFinishedBaseline, best_curve, best_single_run, padded, speedup
from lhopt_cli.results.locks import FolderBusy, folder_lock
from lhopt_cli.results.summary import comparators_beaten, left_out_of_ratio, overall, per_task, rank_among_untuned
from lhopt_cli.results.store import ResultsStore
from lhopt_cli.support.progress import progress_bar
from lhopt_cli.loop.schedule_file import ScheduleFileError, build_schedule, read_schedule, write_schedule
from lhopt_cli.support.threads import on_run_threads

ADAMW_DEFAULT = (1e-3, "constant")  # what torch.optim.AdamW does untouched: its default lr, no schedule
DEFAULT_TASKS = ["mlp_mnist"]  # without tasks or a suite
SUMMARY_COLUMNS = ["task", "seed", "method", "final_valid_loss", "speedup", "best_lr", "best_schedule",
                   "best_at_edge", "speedup_extended", "best_lr_extended"]


@dataclass(frozen=True)
class GridRequest:
    """The AdamW grid an evaluate runs on every member: the paper's lrs and schedules, the
    extended lrs at `extended_schedules` (None: every schedule), the seeds, how the runs are
    spread (executor.workers, executor.path), the job's debug values and the user's task overrides."""

    lrs: tuple[float, ...]
    schedules: tuple[str, ...]
    extended_lrs: tuple[float, ...]
    extended_schedules: tuple[str, ...] | None
    seeds: tuple[int, ...]
    workers: int
    path: str
    debug: dict | None
    task_overrides: tuple[str, ...]

    def settings(self) -> list[tuple[float, str]]:
        """Every (lr, schedule) the grid runs (baseline_grid.grid_settings)."""
        return baseline_grid.grid_settings(list(self.lrs), list(self.schedules), list(self.extended_lrs),
                                           None if self.extended_schedules is None else list(self.extended_schedules))


@dataclass(frozen=True)
class MemberPlan:
    """One task of the evaluate: its id (labels tables, files and figures) and its grid, planned
    at the policy's validation points."""

    id: str
    grid: baseline_grid.GridPlan

    @property
    def task_json(self) -> str:
        return self.grid.jobs[0].task_json


@dataclass(frozen=True)
class EvaluatePlan:
    """Everything `lhopt evaluate` runs from, checked in one pre-flight (`plan`): the policy file
    (its path, network, metadata and observation protocol), the suite's name (None for `tasks`),
    the members with their grids, the grid every member runs, the tuning-free comparators, the
    untuned settings reported from the grid ({method: (lr, schedule)}) and where fixed_default
    was chosen, the schedule file replayed (path and contents), greedy or sampled actions, the
    divergence guard, and the user's grid_dir (None: run_dir/grid)."""

    policy_path: Path
    agent: RecurrentActorCritic
    policy_meta: dict
    protocol: ObservationProtocol
    suite: str | None
    members: tuple[MemberPlan, ...]
    request: GridRequest
    extra_baselines: tuple[str, ...]
    untuned: dict
    fixed_chosen_on: str | None
    replay_path: Path | None
    replay: dict | None
    greedy: bool
    guard: bool
    grid_dir: Path | None

    def grid_dir_of(self, run_dir: Path) -> Path:
        """Where grid runs the stored grids lack go: grid_dir, else run_dir/grid."""
        return self.grid_dir if self.grid_dir is not None else run_dir / "grid"


def suite_members(suite: dict | None, tasks: list[str] | None) -> list[dict]:
    """The tasks to evaluate: the suite's members, or one member per name in `tasks`, each
    {"id", "task" (a conf/task/ name), "params" (task.KEY values)}. ConfigError (one line) for
    both given, an empty task list, or a suite without members."""
    if suite is None:
        tasks = DEFAULT_TASKS if tasks is None else list(tasks)
        if not tasks:
            raise ConfigError("tasks=[] names no task; give task names or suite=test / suite=validation")
        return [{"id": name, "task": name, "params": {}} for name in tasks]
    if tasks is not None:
        raise ConfigError(f"give either suite={suite['name']} or tasks=[...], not both")
    if not suite["members"]:
        family = f" (the task family '{suite['family']}')" if suite.get("family") else ""
        raise ConfigError(f"suite '{suite['name']}' lists no tasks{family}; evaluate suite=validation or suite=test")
    return suite["members"]


def check_fixed_default(record: dict | None, request: GridRequest) -> None:
    """ConfigError (one line) unless the user's fixed setting is one of the grid's settings: both
    its lr and schedule given, a setting the paper's or the extended grid runs (a suite's recorded
    setting that a reduced grid lacks is simply not reported)."""
    if record is None:
        return
    missing = [k for k in ("lr", "schedule") if record.get(k) in (None, "???")]
    if missing:
        raise ConfigError(f"fixed_default needs both lr and schedule (missing: {missing[0]}), e.g. "
                          "fixed_default={lr: 0.003, schedule: linear}")
    lr, schedule = float(record["lr"]), str(record["schedule"])
    if not any(math.isclose(lr, a, rel_tol=1e-9) and schedule == b for a, b in request.settings()):
        raise ConfigError(f"fixed_default: lr {lr:g} {schedule} is not a setting of the grid (the paper's lrs and "
                          "schedules, and extended_lrs at extended_schedules); give one that is")


def grid_request(cfg: DictConfig) -> GridRequest:
    """The grid part of an evaluate config (this command's, or a validation suite's)."""
    extended = cfg.get("extended_schedules")
    debug = cfg.get("debug")
    return GridRequest(lrs=tuple(float(lr) for lr in cfg.grid.lrs), schedules=tuple(str(s) for s in cfg.grid.schedules),
                       extended_lrs=tuple(float(lr) for lr in cfg.extended_lrs or []),
                       extended_schedules=None if extended is None else tuple(str(s) for s in extended),
                       seeds=tuple(int(s) for s in cfg.seeds), workers=int(cfg.executor.workers),
                       path=str(cfg.executor.path),
                       debug=None if debug is None else OmegaConf.to_container(debug, resolve=True),
                       task_overrides=tuple(str(o) for o in cfg.task_overrides))


def member_grid(request: GridRequest, member: dict, protocol: ObservationProtocol) -> baseline_grid.GridPlan:
    """The baseline grid of a suite member, validated at the protocol's points (a task override
    that contradicts them is refused): the paper's grid, then the extended lrs at their schedules."""
    extended = request.extended_schedules
    overrides = [*member_overrides(member), f"seeds={list(request.seeds)}",
                 f"executor.workers={request.workers}", f"executor.path={request.path}",
                 f"grid.lrs={list(request.lrs)}", f"grid.extended_lrs={list(request.extended_lrs)}",
                 "grid.extended_schedules=" + ("null" if extended is None else f"[{','.join(extended)}]"),
                 f"grid.schedules=[{','.join(request.schedules)}]"]
    overrides += debug_overrides(request.debug)  # the same debug values, overrides of them included
    overrides += list(request.task_overrides)
    if any(o.split("=")[0].lstrip("+~") == "task.eval_points" for o in request.task_overrides):
        protocol.check("task_overrides", eval_points=int(compose("baseline_grid", overrides).task.eval_points))
    return baseline_grid.plan(compose("baseline_grid", overrides + [f"task.eval_points={protocol.eval_points}"]))


def claim_run_dir(run_dir: Path, policy_path: Path, greedy: bool, guard: bool = True, write: bool = True) -> None:
    """Record which policy file (by SHA-256), which actions (greedy or sampled) and whether the
    divergence guard ran, for this run folder's policy runs; refuse others, whose runs would
    otherwise be mistaken for the stored ones (ConfigError). Folders from before the guard
    existed hold unguarded runs. `write=False` only checks (the pre-flight)."""
    digest = hashlib.sha256(Path(policy_path).read_bytes()).hexdigest()
    record = run_dir / "policy.json"
    if record.exists():
        try:
            held = json.loads(record.read_text())
        except (ValueError, UnicodeDecodeError):
            held = None
        if not isinstance(held, dict):
            raise ConfigError(f"{record}: not a readable policy record; restore it or evaluate in another run_dir")
        if held.get("sha256") != digest:
            raise ConfigError(f"{run_dir} holds the runs of another policy ({held.get('path')}); "
                              "evaluate this one in another run_dir")
        if held.get("greedy", True) != greedy:
            raise ConfigError(f"{run_dir} holds this policy's {'greedy' if held.get('greedy', True) else 'sampled'} "
                              f"runs; evaluate greedy={str(greedy).lower()} in another run_dir")
        if held.get("guard", False) != guard:
            raise ConfigError(f"{run_dir} holds this policy's runs {'with' if held.get('guard', False) else 'without'} "
                              f"the divergence guard; evaluate guard={str(guard).lower()} in another run_dir")
        return
    if write:
        atomic_write_text(record, json.dumps({"path": str(policy_path), "sha256": digest, "greedy": greedy,
                                              "guard": guard}) + "\n")


def plan(cfg: DictConfig, run_dir: Path | None = None) -> EvaluatePlan:
    """The command's pre-flight, everything `run` checks before it writes anything: the executor,
    the extra baselines, fixed_default against the grid, the replayed schedule file, the policy
    file, the protocol settings against it, every task's config (task_overrides applied) and,
    given the `run_dir`, that it and `grid_dir` hold no other policy's runs nor a damaged table
    and that `grid_dir` neither is nor lies under a file.
    Raises ConfigError, PolicyFileError, ProtocolError or StoreError (one line each)."""
    baseline_grid.require_local_executor(cfg.executor.get("name", "local"))
    request = grid_request(cfg)
    user_fixed = cfg.get("fixed_default")  # the user's own; a suite's record on a reduced grid is just not shown
    user_fixed = None if user_fixed is None else OmegaConf.to_container(user_fixed, throw_on_missing=False)
    check_fixed_default(user_fixed, request)
    extra = tuple(str(b) for b in cfg.extra_baselines)
    unknown = [b for b in extra if b not in EXTRA_BASELINES]
    if unknown:
        raise ConfigError(f"unknown extra baseline '{unknown[0]}'; known: {', '.join(EXTRA_BASELINES)}")
    twice = sorted({b for b in extra if extra.count(b) > 1})
    if twice:
        raise ConfigError(f"extra_baselines lists {twice[0]} more than once")
    replay_path = Path(str(cfg.replay)) if cfg.get("replay") else None
    replay = None
    if replay_path is not None:
        try:
            replay = read_schedule(replay_path)
        except ScheduleFileError as err:
            raise ConfigError(f"replay={cfg.replay}: {str(err).split(': ', 1)[1]}") from None
    policy_path = default_policy_path() if cfg.policy == "default" else Path(cfg.policy)
    agent, policy_meta = load_policy(policy_path)
    protocol = policy_protocol(policy_meta)
    protocol.check("evaluate protocol", **OmegaConf.to_container(cfg.protocol, resolve=True))
    suite = None if cfg.get("suite") is None else OmegaConf.to_container(cfg.suite, resolve=True)
    members = tuple(MemberPlan(m["id"], member_grid(request, m, protocol))  # task_overrides included
                    for m in suite_members(suite, None if cfg.tasks is None else list(cfg.tasks)))
    chosen = user_fixed or (suite or {}).get("fixed_default")
    if chosen is None:
        chosen = OmegaConf.to_container(compose("evaluate", ["suite=test"]).suite, resolve=True).get("fixed_default")
    untuned = {"adamw_default": ADAMW_DEFAULT}
    if chosen is not None:
        untuned["fixed_default"] = (float(chosen["lr"]), str(chosen["schedule"]))
    made = EvaluatePlan(policy_path=policy_path, agent=agent, policy_meta=policy_meta, protocol=protocol,
                        suite=None if suite is None else str(suite["name"]), members=members, request=request,
                        extra_baselines=extra, untuned=untuned,
                        fixed_chosen_on=None if chosen is None else chosen.get("chosen_on"),
                        replay_path=replay_path, replay=replay, greedy=bool(cfg.greedy), guard=bool(cfg.guard),
                        grid_dir=Path(str(cfg.grid_dir)) if cfg.grid_dir else None)
    if run_dir is not None:
        claim_run_dir(run_dir, policy_path, made.greedy, made.guard, write=False)
        ResultsStore(run_dir)  # a damaged table there: StoreError
        grid_dir = made.grid_dir_of(run_dir)
        blocker = file_in_the_way(grid_dir)
        if blocker is not None:
            raise ConfigError(f"grid_dir: {blocker} is a file, not a folder")
        if grid_dir.is_dir():
            ResultsStore(grid_dir)  # a damaged grid table: StoreError
    return made


def note_other_settings(grid_dir: Path, runs: pd.DataFrame, task_name: str, task_json: str, console: Console) -> None:
    """Say so when `grid_dir`'s `runs` hold `task_name` at other task settings than this
    evaluate's (debug=smoke's eval_points against the policy's protocol, another batch size):
    those are not reused, and the grid runs again at this evaluate's settings."""
    others = set(runs.task_params[(runs.task == task_name) & (runs.task_params != task_json)]) if len(runs) else set()
    if not others or task_json in set(runs.task_params):
        return
    mine = json.loads(task_json)
    theirs = json.loads(sorted(others)[0])
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    shown = ", ".join(f"{k} {theirs.get(k)} there, {mine.get(k)} here" for k in differ[:3])
    console.print(f"grid_dir {grid_dir}: its {task_name} runs were made at other task settings ({shown}); "
                  "they are not reused, the grid runs at this evaluate's")


@contextmanager
def hold_grid_dir(grid_dir: Path | None, run_dir: Path):
    """Hold the user's `grid_dir` (None: none given), when outside `run_dir`, for the body
    (created if missing): another command writing it at the same time would lose runs.
    ConfigError (one line) where another command holds it or the file system refuses (a
    read-only folder)."""
    if grid_dir is None or grid_dir.resolve() == run_dir.resolve():
        yield
        return
    try:
        grid_dir.mkdir(parents=True, exist_ok=True)
        lock = folder_lock(grid_dir, "lhopt evaluate (its grid_dir)")
        lock.__enter__()
    except FolderBusy as err:
        raise ConfigError(f"grid_dir: {err}") from None
    except OSError as err:
        raise ConfigError(f"grid_dir: {grid_dir}: {err.strerror or err}") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


@on_run_threads  # the whole command on the runs' thread count (docs/method.md)
def run(plan: EvaluatePlan, run_dir: Path, console: Console | None = None, grid_dir_held: bool = False) -> pd.DataFrame:
    """Run the plan into `run_dir`: the grids the stored ones lack, the policy and every method
    run not yet done, then summary.csv, the tables and the figures. `grid_dir_held`: the caller
    holds `grid_dir` (hold_grid_dir), as the CLI does before the run folder is written."""
    console = console or Console(soft_wrap=True)
    policy_path, policy_meta, protocol, seeds = plan.policy_path, plan.policy_meta, plan.protocol, plan.request.seeds
    claim_run_dir(run_dir, policy_path, plan.greedy, plan.guard)
    trained = (policy_meta.get("config") or {}).get("trained_iterations")
    console.print(f"policy: {policy_path}" + (f" ({trained} PPO iterations)" if trained else "")
                  + (f", lr decay {protocol.lr_decay}" if protocol.lr_decay != "constant" else ""))
    grid_dir = plan.grid_dir_of(run_dir)
    with ExitStack() if grid_dir_held else hold_grid_dir(plan.grid_dir, run_dir):
        # a suite's stored reference grids are read (never written) unless grid_dir names a store to use
        stored = baseline_grid.STORED_GRIDS / plan.suite if plan.suite is not None and plan.grid_dir is None else None
        if stored is not None and not (stored / "runs.parquet").exists():
            console.print(f"no stored grids for suite {plan.suite} ({stored}: a source checkout has them); "
                          f"the grid runs go into {grid_dir}")
            stored = None
        store = ResultsStore(run_dir)
        comparators = stored_comparators(plan)  # the suite's extra baselines, run once and kept
        from_stored = 0
        summary, figures = [], []
        members, jobs = [], []  # (task name, task JSON, task, grid curves) per member; the method runs to do
        policy_digest = hashlib.sha256(Path(policy_path).read_bytes()).hexdigest()  # in every schedule file
        replay = plan.replay
        replay_digest = hashlib.sha256(plan.replay_path.read_bytes()).hexdigest() if replay is not None else ""
        if replay is not None:
            console.print(f"replay: {plan.replay_path} (recorded on {replay['task']}, seed {replay['seed']}, "
                          f"{replay['total_steps']} steps)")
        untuned = dict(plan.untuned)
        if "fixed_default" in untuned:
            fixed = untuned["fixed_default"]
            console.print(f"fixed_default: lr {fixed[0]:g} {fixed[1]} (one setting for every task, chosen on "
                          f"{plan.fixed_chosen_on or 'an unnamed suite'})")
        if plan.suite is not None:
            console.print(f"suite: {plan.suite} ({len(plan.members)} tasks)")
        for member in plan.members:
            task_name = member.id  # labels the tables, files and figures; run ids carry the parameters too
            console.print(f"[bold]{task_name}[/bold]: AdamW grid" + ("" if stored else f" ({grid_dir})"))
            held = ResultsStore(grid_dir) if plan.grid_dir is not None else None  # read once: the note and the count
            if held is not None:  # every run it records, those whose curves are gone too
                note_other_settings(grid_dir, held.recorded_runs, task_name, member.task_json, console)
            recorded = len(held.runs) if held is not None else 0
            grid_curves = baseline_grid.curves_reusing(member.grid, grid_dir, stored, console)
            added = len(ResultsStore(grid_dir).runs) - recorded if plan.grid_dir is not None else 0
            if added:  # a baseline-grid folder this command added runs to: its table, heatmap and log follow
                import datetime

                baseline_grid.refresh_grid_reports(
                    grid_dir, note=f"{datetime.datetime.now().isoformat(timespec='seconds')} lhopt evaluate "
                                   f"(run_dir {run_dir}) added {added} runs of {task_name}")
            task_json = member.task_json
            task_cfg = json.loads(task_json)
            task = baseline_grid.cached_task(task_json)  # the one the method runs of this process use
            key = baseline_grid.task_key(task_cfg)
            members.append((task_name, task_json, task, grid_curves))
            done = store.finished_ids()
            if comparators is not None:  # read, not run again: the same task settings and seeds
                wanted = {method_run_id(task_name, key, int(s), m) for m in plan.extra_baselines for s in seeds}
                found = sorted((wanted - done) & comparators.finished_ids())
                if found:
                    store.add([(run, comparators.curves[comparators.curves.run_id == run["run_id"]].to_dict("records"))
                               for run in comparators.runs[comparators.runs.run_id.isin(found)].to_dict("records")])
                    done, from_stored = done | set(found), from_stored + len(found)
            methods = ["lhopt", *(["replay"] if replay is not None else []), *plan.extra_baselines]
            jobs += [MethodRun(task_name, method, task_json, int(s), str(policy_path), plan.greedy, plan.guard,
                               str(plan.replay_path) if replay is not None else "")
                     for method in methods for s in seeds
                     if method_run_id(task_name, key, int(s), method, replay_digest) not in done]
        if from_stored:
            console.print(f"{from_stored} comparator runs read from {STORED_COMPARATORS / plan.suite}")
        if jobs:
            workers = resolve_workers(plan.request.workers, len(jobs))
            if sum(cached_steps(job) for job in jobs) < SMALL_METHOD_JOB_STEPS:
                workers = 1  # seconds of work: starting workers would cost more
            console.print(f"{len(jobs)} method runs ({', '.join(dict.fromkeys(j.method for j in jobs))}) on "
                          f"{workers} worker process{'es' * (workers > 1)}")
            with progress_bar(console) as bar:
                progress = bar.add_task("method runs", total=len(jobs))
                for job, run in run_jobs(execute_method_run, jobs, workers):
                    record_method_run(store, run_dir, job, run, protocol, policy_digest, replay_digest)
                    bar.advance(progress)
        for task_name, task_json, task, grid_curves in members:
            grid_curves = grid_curves[grid_curves.task_params == task_json]
            ours = store.curves[store.curves.task_params == task_json]
            rows = summarize(task_name, seeds, grid_curves, ours, list(plan.request.lrs), untuned)
            summary += rows
            figures.append(learning_curve_plot(task_name, grid_curves, ours, run_dir / f"curves_{task_name}.png",
                                               paper_lrs=list(plan.request.lrs)))
            decisions_files = sorted(run_dir.glob(f"decisions_{task_name}_s*.csv"))
            if decisions_files:
                figures.append(hyperparameter_plot(task_name, decisions_files, run_dir / f"hyperparameters_{task_name}.png",
                                                   protocol.lr_decay, task.total_steps))
        table = pd.DataFrame(summary, columns=SUMMARY_COLUMNS)
        atomic_write(run_dir / "summary.csv", lambda tmp: table.to_csv(tmp, index=False))
        print_summary(table, console)
        for path in figures:
            console.print(f"figure: {path}")
        grids = ", ".join(str(d) for d in (stored, grid_dir) if d is not None and (d / "runs.parquet").exists())
        console.print(f"summary: {run_dir / 'summary.csv'}\ncurves: {run_dir / 'results.parquet'} (grid: {grids})")
        return table


SMALL_METHOD_JOB_STEPS = 5_000  # below this many run-steps in all, the method runs stay in this process
# the suites' comparator runs (extra_baselines), kept beside the stored grids by scripts/suites/make_comparator_tables.py
STORED_COMPARATORS = baseline_grid.STORED_GRIDS.parent / "comparators"


def stored_comparators(plan: EvaluatePlan) -> ResultsStore | None:
    """The stored comparator runs of the plan's suite (read only), or None: no suite, no extra
    baselines, a grid_dir of the user's (their own settings), or nothing stored."""
    if plan.suite is None or not plan.extra_baselines or plan.grid_dir is not None:
        return None
    folder = STORED_COMPARATORS / plan.suite
    return ResultsStore(folder) if (folder / "runs.parquet").is_file() else None


def method_run_id(task_name: str, key: str, seed: int, method: str, replay_digest: str = "") -> str:
    """The results store's run id of one method run (the replay's carries its file's digest)."""
    suffix = f"replay-{replay_digest[:12]}" if method == "replay" else method
    return f"{task_name}-{key}-s{seed}-{suffix}"


def cached_steps(job: MethodRun) -> int:
    """The run-steps of `job`'s task (its Task built once per process)."""
    return baseline_grid.cached_task(job.task_json).total_steps


def record_method_run(store: ResultsStore, run_dir: Path, job: MethodRun, run, protocol: ObservationProtocol,
                      policy_digest: str, replay_digest: str) -> None:
    """Add a finished method run to the store; a policy run also writes its decision log and the
    schedule it used (replayable on any AdamW: lhopt_cli.ReplaySchedule)."""
    task = baseline_grid.cached_task(job.task_json)
    key = baseline_grid.task_key(json.loads(job.task_json))
    meta = {"command": "evaluate", "task": job.member, "task_params": job.task_json, "lr0": np.nan,
            "run_id": method_run_id(job.member, key, job.seed, job.method, replay_digest), "method": job.method,
            "seed": job.seed, "schedule": job.method}
    if job.method == "lhopt":  # the files first: a run in the store has its decisions beside it
        atomic_write(run_dir / f"decisions_{job.member}_s{job.seed}.csv",
                     lambda tmp: pd.DataFrame(run.decisions).to_csv(tmp, index=False))
        write_schedule(run_dir / f"schedule_{job.member}_s{job.seed}.json",
                       build_schedule(EVAL_START, run.decisions, task.total_steps, protocol.lr_decay,
                                      job.member, job.seed, policy_digest))
    store.add([baseline_grid.result_rows(meta, task, run.result)])


def summarize(task_name: str, seeds, grid_curves: pd.DataFrame, ours: pd.DataFrame, paper_lrs: list[float],
              untuned: dict[str, tuple[float, str]] | None = None) -> list[dict]:
    """Per seed: the best of the paper's grid (learning rates `paper_lrs`), and every other
    method's final loss and speedup over that grid and over the whole stored grid (the extended
    learning rates too); `best_at_edge` flags a paper-grid best at its lowest or highest lr.

    `untuned` ({method: (lr, schedule)}) names grid runs reported as methods of their own (the
    untuned choices: AdamW's defaults, one fixed setting for every task); with it, `oracle` is
    the best single run of the whole grid for this task and seed, chosen in hindsight."""
    rows = []
    in_paper = np.isclose(grid_curves.lr0.to_numpy(float)[:, None], np.asarray(paper_lrs, float)[None]).any(1)
    for seed in seeds:
        grids = {}
        for name, part in (("paper", grid_curves[in_paper]), ("extended", grid_curves)):
            curves = {rid: g.sort_values("step") for rid, g in part[part.seed == seed].groupby("run_id")}
            steps = max(curves.values(), key=len).step.to_numpy()
            grids[name] = (steps, [padded(c.valid_loss, len(steps)) for c in curves.values()], best_curve(curves, steps))
        steps, baselines, best = grids["paper"]
        _, extended, best_extended = grids["extended"]
        best_lr = float(best.lr0.iloc[0])
        base = {"task": task_name, "seed": seed, "best_lr": best_lr, "best_schedule": best.schedule.iloc[0],
                "best_at_edge": bool(np.isclose(best_lr, [min(paper_lrs), max(paper_lrs)]).any()),
                "best_lr_extended": float(best_extended.lr0.iloc[0])}
        methods = [("best_baseline", best)] + [(m, g.sort_values("step")) for m, g in ours[ours.seed == seed].groupby("method")]
        if untuned is not None:
            runs = {(float(c.lr0.iloc[0]), c.schedule.iloc[0]): c.sort_values("step")
                    for _, c in grid_curves[grid_curves.seed == seed].groupby("run_id")}
            for method, (lr, schedule) in untuned.items():
                match = [c for (run_lr, run_schedule), c in runs.items() if np.isclose(run_lr, lr) and run_schedule == schedule]
                if match:
                    methods.append((method, match[0]))
            _, key = best_single_run(steps, {k: padded(c.valid_loss, len(steps)) for k, c in runs.items()}, baselines)
            methods.append(("oracle", runs[key]))
        for method, curve in methods:
            loss = padded(curve.valid_loss, len(steps))
            try:
                values = speedup(steps, loss, baselines), speedup(steps, loss, extended)
            except NoFinishedBaseline as err:
                raise ConfigError(f"{task_name}, seed {seed}: {err}") from None
            rows.append({**base, "method": method, "final_valid_loss": float(curve.valid_loss.iloc[-1]),
                         "speedup": values[0], "speedup_extended": values[1]})
    return rows


def print_summary(table: pd.DataFrame, console: Console) -> None:
    for task_name, rows in table.groupby("task", sort=False):
        shown = Table(title=f"{task_name}: speedup over the best of the AdamW grid (per seed)")
        for column in ("method", "final valid loss (median)", "speedup per seed", "median [min, max]",
                       "vs extended grid"):
            shown.add_column(column, justify="left" if column == "method" else "right")
        best = rows[rows.method == "best_baseline"]
        caption = ", ".join(f"seed {r.seed}: lr {r.best_lr:g} {r.best_schedule}" + (" (grid edge)" * r.best_at_edge)
                            for r in best.itertuples())
        shown.caption = f"best baseline per seed: {caption}"
        for method in per_task(rows).method:
            group = rows[rows.method == method]
            s, e = group.speedup.to_numpy(float), group.speedup_extended.to_numpy(float)
            shown.add_row(method, f"{group.final_valid_loss.median():.4f}", " ".join(f"{v:.2f}x" for v in s),
                          f"{np.median(s):.2f}x [{s.min():.2f}, {s.max():.2f}]", f"{np.median(e):.2f}x")
        console.print(shown)
    tasks = per_task(table)
    totals = overall(tasks)
    print_totals(totals, console, left_out_of_ratio(tasks))
    rank = rank_among_untuned(totals)
    if rank is not None and rank[1] > 1:
        beaten = comparators_beaten(tasks)
        others = rank[1] - 1
        console.print(f"lhopt ranks {rank[0]} of {rank[1]} among the choices that need no tuning (median over tasks); "
                      "it beats, per task: " + ", ".join(f"{task} {count} of {others}" for task, count in beaten.items()))


def print_totals(totals: pd.DataFrame, console: Console, left_out: list[str] | None = None) -> None:
    """The suite in one table (one task too): per method, the median over tasks (of the medians over
    seeds) against the best of 35 and the extended grid, the worst task, and the median ratio to
    fixed_default, whose caption names the tasks that ratio leaves out (`left_out`: fixed_default
    scores 0 there)."""
    shown = Table(title="over the tasks: median of the per-task medians over seeds")
    if left_out:
        shown.caption = (f"vs fixed_default leaves out {', '.join(left_out)}: fixed_default scores 0 there "
                         "(no ratio to it exists)")
    for column in ("method", "vs best of 35", "vs extended grid", "worst task", "vs fixed_default"):
        shown.add_column(column, justify="left" if column in ("method", "worst task") else "right")
    for r in totals.itertuples():
        ratio = "" if r.vs_fixed_default is None or pd.isna(r.vs_fixed_default) else f"{r.vs_fixed_default:.2f}x"
        shown.add_row(r.method, f"{r.median:.2f}x", f"{r.extended:.2f}x", f"{r.worst_task} {r.worst:.2f}x", ratio)
    console.print(shown)
