"""The `lhopt` command line: parse, compose the config, call the command's run(cfg)."""
from __future__ import annotations

import os
import re
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager
from typing import Annotated

import typer
from omegaconf import OmegaConf
from rich.console import Console

from lhopt_cli.config.compose import ConfigError, compose, config_groups_help, run_folder

app = typer.Typer(
    help="lhopt: learned optimizer-hyperparameter control (LHOPT). Each command takes trailing "
    "Hydra overrides, e.g. `lhopt baseline-grid task=char_lm seeds=[0,1]`.",
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"lhopt {version('lhopt-cli')}")
        raise typer.Exit(0)


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print lhopt's version and exit.")] = False) -> None:
    """lhopt: learned optimizer-hyperparameter control (LHOPT). Each command takes trailing Hydra
    overrides, e.g. `lhopt baseline-grid task=char_lm seeds=[0,1]`."""
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": ["-h", "--help"]}
CfgFlag = Annotated[bool, typer.Option("--cfg", help="Print the composed config and exit.")]
# paths and messages stay on one line; piped into a file or another program (no terminal, no
# COLUMNS), tables get 160 columns instead of rich's 80, so they are not cut or wrapped mid-cell
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)


@contextmanager
def _resumable():
    """Ctrl-C or SIGTERM ends a long command with one line (typer would exit silently). SIGTERM is
    taken as Ctrl-C, so the command's cleanup runs: its worker processes are shut down instead of
    outliving it (a job started in the background ignores SIGINT; SIGTERM is how it is stopped)."""
    main = threading.current_thread() is threading.main_thread()  # only there may a handler be set
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main else None
    try:
        yield
    except KeyboardInterrupt:
        typer.echo("interrupted: finished work is saved; rerun the same command (resume=true for "
                   "train-policy) to continue", err=True)
        raise typer.Exit(130) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def _logged(run_dir, ctx: typer.Context):
    """What the command prints also goes, as plain text, into run_dir/lhopt.log (appended, one
    header line per command: when, and the command line as typed), as lightning-hydra-template
    keeps a train.log; progress bars stay on the terminal."""
    import datetime
    import shlex

    path = run_dir / "lhopt.log"
    from lhopt_cli.support.files import open_append

    with open_append(path) as handle:  # never through a link planted at its name (refused, one line)
        handle.write(f"\n# {datetime.datetime.now().isoformat(timespec='seconds')} "
                     f"$ lhopt {ctx.command.name} {shlex.join(ctx.args)}\n")
        to_file = Console(file=handle, width=160, no_color=True, soft_wrap=True, force_terminal=False)
        printed = console.print

        def both(*objects, **kwargs):
            printed(*objects, **kwargs)
            if not any(type(o).__name__ == "Control" for o in objects):  # a live display's cursor moves
                to_file.print(*objects, **kwargs)
                handle.flush()

        console.print = both
        try:
            yield
        finally:
            del console.print  # the instance attribute: the class's method again


HYDRA_CONFIG_FLAGS = ("-cd", "--config-dir", "-cp", "--config-path", "-cn", "--config-name")


# What a command that runs one job takes instead of a -m sweep
ONE_JOB = {"evaluate": "give lists in one command (seeds=[0,1,2], tasks=[a,b]), ",
           "train-policy": "one meta-training run per command (several: several commands, each its own run_dir), ",
           "scaling-fit": "give every folder or table in one command (inputs=[a,b]), "}


def sweep_habits(args: list[str], show: bool) -> None:
    """`lhopt baseline-grid -m`: the flags a sweep cannot take, refused in one line (ConfigError)."""
    if show:
        raise ConfigError("--cfg with -m: a sweep has one config per job; drop -m and give one job's values "
                          "(key=a instead of key=a,b) to print its config")
    for arg in args:
        flag = arg.split("=", 1)[0]
        if arg.startswith("-") and flag not in ("-m", "--multirun"):
            raise ConfigError(f"{flag}: not an option of `lhopt baseline-grid -m` (a sweep takes overrides, "
                              "key=a,b, and hydra/launcher=...)")


HYDRA_APP_FLAGS = ("--info", "-i", "--hydra-help", "--shell-completion", "-sc", "--resolve", "--package", "-p",
                   "--run", "-r", "--experimental-rerun")


def hydra_habits(args: list[str], show: bool, command: str = "baseline-grid") -> list[str]:
    """Hydra's command-line habits, taken where they mean something here and refused in one
    line (ConfigError) where they do not: `--cfg job` (and `--cfg all`) is `--cfg`; a config
    folder or name flag, Hydra's own app flags (--info, --hydra-help, ...), `-m` outside
    `baseline-grid`, `--cfg hydra` and `hydra.*` overrides outside a -m sweep are refused with
    what to use instead. Returns the overrides left."""
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in ("-m", "--multirun"):
            raise ConfigError(f"{flag}: `lhopt {command}` runs one job; {ONE_JOB.get(command, '')}or sweep the "
                              "grid's jobs with `lhopt baseline-grid -m`")
        if flag in HYDRA_APP_FLAGS:
            raise ConfigError(f"{flag}: not an lhopt flag; --help lists the config groups, --cfg prints the "
                              "composed config")
        if flag in HYDRA_CONFIG_FLAGS:
            raise ConfigError(f"{flag}: lhopt's configs are built in (conf/, listed by --help); give values as "
                              "overrides (key=value) or a group option (experiment=..., task=...)")
        if arg.startswith("hydra.run.dir") or arg.startswith("+hydra.run.dir"):
            value = arg.split("=", 1)[1] if "=" in arg else "PATH"
            raise ConfigError(f"hydra.run.dir is not read here: lhopt writes a command's files into run_dir; "
                              f"use run_dir={value}")
        if arg.lstrip("+~").startswith("hydra."):
            raise ConfigError(f"{arg.split('=', 1)[0]}: hydra.* settings apply to `lhopt baseline-grid -m` sweeps only")
        if arg.startswith("-"):
            raise ConfigError(f"{flag}: not an option of `lhopt {command}` (options: --cfg, -h/--help; everything "
                              "else is an override, key=value)")
    if show and "hydra" in args:
        raise ConfigError("--cfg hydra: lhopt has no Hydra runtime config outside -m sweeps; --cfg (or --cfg job) "
                          "prints the command's config")
    return [a for a in args if not (show and a in ("job", "all"))]


def _compose(ctx: typer.Context, config_name: str, show: bool):
    cfg = compose(config_name, hydra_habits(list(ctx.args), show, ctx.command.name))
    if show:
        typer.echo(OmegaConf.to_yaml(cfg, resolve=True), nl=False)
        raise typer.Exit(0)
    return cfg


@app.command("baseline-grid", context_settings=OVERRIDES, epilog=config_groups_help("baseline_grid"))
def baseline_grid(ctx: typer.Context, cfg_only: CfgFlag = False) -> None:
    """The 5 x 7 AdamW baseline grid (learning rates x schedules), one epoch per run.

    Writes `results.parquet` (curves), `runs.parquet` (status per run), `grid_table.csv` and
    `grid_heatmap.png` into `run_dir`. Rerun with the same `run_dir` to resume.

    With `--multirun` (`-m`), Hydra sweeps the overrides and its launcher runs the jobs
    (`hydra/launcher=joblib`, or `submitit_slurm` for SLURM); rerun without `-m` to print the table.

    Examples:

    - `lhopt baseline-grid task=cnn_mnist seeds=[0,1,2] executor.workers=2`
    - `lhopt baseline-grid debug=smoke run_dir=/tmp/grid`
    - `lhopt baseline-grid -m task=nqm,cnn_mnist chunks=2 chunk=0,1 run_dir=outputs/grid hydra/launcher=joblib`
    """
    if "--multirun" in ctx.args or "-m" in ctx.args:
        from lhopt_cli.commands.hydra_app import run_sweep

        sweep_habits(list(ctx.args), cfg_only)
        with _resumable():
            run_sweep(list(ctx.args))
        return
    cfg = _compose(ctx, "baseline_grid", cfg_only)  # config errors before torch is imported
    from lhopt_cli.commands import baseline_grid as job
    from lhopt_cli.support.plots import grid_heatmap
    from lhopt_cli.support.report import best_cell, print_grid, write_grid_csv

    from lhopt_cli.results.store import ResultsStore

    plan = job.plan(cfg)  # checks the grid's values before anything is written
    # a damaged table already in run_dir is refused before this command writes there
    with run_folder(cfg, check=ResultsStore, overrides=ctx.args) as run_dir, _logged(run_dir, ctx), _resumable():
        table = job.run(plan, run_dir, console)
        title = f"{plan.task_name}: final validation loss (median over seeds {list(cfg.seeds)})"
        print_grid(table, title, console)
        csv_path = write_grid_csv(table, run_dir / "grid_table.csv")
        png_path = grid_heatmap(table, title, run_dir / "grid_heatmap.png")
        best = best_cell(table)
        if best:
            console.print(f"best: lr={best[0]:g} schedule={best[1]} loss={table.loc[best[0], best[1]]:.4f}")
        shards = " and shards/ (a multirun's jobs)" if (run_dir / "shards").is_dir() else ""
        console.print(f"table: {csv_path}\nheatmap: {png_path}\ncurves: {run_dir / 'results.parquet'}{shards}")


@app.command("train-policy", context_settings=OVERRIDES, epilog=config_groups_help("train_policy"))
def train_policy(ctx: typer.Context, cfg_only: CfgFlag = False) -> None:
    """Meta-train the LHOPT controller (recurrent policy) with PPO over a task family.

    Writes `meta_train.csv` (one row per PPO iteration: reward, approx_kl, clipfrac, entropy,
    explained variance, episodes/s, reference_s, validation_speedup[_polyak], anchor_kl),
    `checkpoint.pt`, `best.pt` and, at the end, `policy.pt` into `run_dir`.

    Checkpoints are chosen on validation: every `validation.every` iterations (default 25, 0: never)
    the policy runs greedily on `validation.suite` (default `validation`; the test suite is refused)
    with `validation.seeds`, its median speedup over the stored grids' best of 35 is logged, and
    `best.pt` keeps the best policy so far (with `ppo.polyak`, the best of the raw and the
    Polyak-averaged weights).

    The reward: `reward.reference=defaults` (the paper's, over AdamW at its defaults) or `sweep`
    (the log speedup over a small tuned AdamW sweep on the episode's own instance and seed); the
    advantage: `ppo.advantage=gae` or `loo` (against the other episodes on the same instance);
    `experiment=tuned_reference` combines the newer settings (README, "Meta-training");
    `init_policy=FILE` starts from a policy file and `ppo.anchor_coef` holds the policy near it.

    A killed run continues with `resume=true` and the same `run_dir`. `workers=N` rollout workers run
    in this process, in local processes (`executor.workers=N`) or as Ray actors (`executor=ray`,
    `executor.address=auto` to join a running cluster), with the same results.

    The policy file fixes its observation protocol from `controller.eval_decisions`, `stats_every`,
    `eval_points`, `parameter_count`, `min_interval` and `lr_decay` (a schedule multiplying the
    policy's lr at every step); every run it later drives is observed that way, and a resume under
    another protocol is refused.

    Examples:

    - `lhopt train-policy run_dir=outputs/policy`
    - `lhopt train-policy debug=smoke`
    - `lhopt train-policy task_family=nqm_low_lr ppo.iterations=60 envs=8`
    - `lhopt train-policy executor=ray workers=8`
    """
    cfg = _compose(ctx, "train_policy", cfg_only)  # config errors before torch is imported
    from lhopt_cli.commands import train_policy as job

    plans = []  # the pre-flight's plan: every check before the first byte

    with (run_folder(cfg, check=lambda run_dir: plans.append(job.plan(cfg, run_dir)), overrides=ctx.args) as run_dir,
          _logged(run_dir, ctx), _resumable()):
        policy = job.run(plans[0], console)
        console.print(f"policy: {policy}\nlog: {run_dir / 'meta_train.csv'}")


@app.command("evaluate", context_settings=OVERRIDES, epilog=config_groups_help("evaluate"))
def evaluate(ctx: typer.Context, cfg_only: CfgFlag = False) -> None:
    """Run a learned policy on one-epoch tasks against the best of the AdamW grid.

    Tasks: `tasks=[...]` (default `mlp_mnist`) or a whole suite: `suite=test` (12 tasks of kinds the
    policy never trained on, whose best learning rates differ: report on these), `suite=validation`
    (12 family instances), `suite=validation_heldout` (12 tasks of kinds no training family draws:
    choose on these), `suite=test_short` and `suite=validation_heldout_short` (the suites they
    replaced), `suite=smoke`. A suite's stored reference grids (`benchmarks/grids/`) are read, never
    written, so only the compared methods run; otherwise the grid runs go into `grid_dir` (reused
    and completed) or `run_dir/grid`.

    Beside the policy, every table reports the untuned choices, read from the grid's own runs:
    `adamw_default` (lr 1e-3, constant), `fixed_default` (one setting chosen on
    validation_heldout, recorded in conf/suite/test.yaml), Prodigy and Schedule-Free at their
    defaults, and the `oracle` (the best single grid run per task and seed, in hindsight); a suite
    ends with each method's median over tasks and its ratio to `fixed_default`.

    Writes into `run_dir`: `summary.csv` (task, seed, method, final_valid_loss, speedup, best_lr,
    best_schedule, best_at_edge, speedup_extended, best_lr_extended: the speedup over the grid
    extended to `extended_lrs` at `extended_schedules`, and whether the best of the paper's grid
    lies on its edge),
    `results.parquet` (the curves), `decisions_<task>_s<seed>.csv` and, per task,
    `curves_<task>.png` and `hyperparameters_<task>.png`.

    The policy file's observation protocol sets the decisions per run, the statistics cadence and
    the validation points (of the grid too); `protocol.KEY=VALUE` only checks it (a contradiction
    is refused), and so is a `task.eval_points` in `task_overrides`.

    Examples:

    - `lhopt evaluate tasks=[mlp_mnist,char_lm] seeds=[0,1,2]`
    - `lhopt evaluate suite=test`
    - `lhopt evaluate policy=outputs/policy/best.pt suite=validation seeds=[0]`
    - `lhopt evaluate policy=outputs/policy/policy.pt grid_dir=outputs/grid debug=smoke`
    """
    cfg = _compose(ctx, "evaluate", cfg_only)  # config errors before torch is imported
    from lhopt_cli.commands import evaluate as job

    plans, held = [], ExitStack()  # the pre-flight's plan (the policy read once) and the grid_dir's lock

    def check(run_dir):  # every check and lock before the first byte: a refused command leaves nothing
        plans.append(job.plan(cfg, run_dir))
        held.enter_context(job.hold_grid_dir(plans[0].grid_dir, run_dir))

    with held, run_folder(cfg, check=check, overrides=ctx.args) as run_dir, _logged(run_dir, ctx), _resumable():
        job.run(plans[0], run_dir, console, grid_dir_held=True)


@app.command("scaling-fit", context_settings=OVERRIDES, epilog=config_groups_help("scaling_fit"))
def scaling_fit(ctx: typer.Context, cfg_only: CfgFlag = False) -> None:
    """Fit scaling laws (compute frontier, parametric) to logged results.

    Reads lhopt run folders or any CSV/Parquet (map columns with `columns.*`), writes `fits.csv`,
    `fits.json` (every parameter with a 95% bootstrap interval, the speedups), and figures. The
    inputs together need runs of at least 2 model sizes per method and 3 points on each method's
    compute frontier: `make bench-scaling` makes such folders (one `evaluate` per width), and
    `experiment=scaling_char_lm` fits the stored ones.

    Examples:

    - `lhopt scaling-fit inputs=[outputs/evaluate/run1] target.flops=1e18`
    - `lhopt scaling-fit inputs=[logs.csv] columns.loss=val_loss columns.params=n_params`
    """
    cfg = _compose(ctx, "scaling_fit", cfg_only)  # config errors before torch is imported
    from lhopt_cli.commands import scaling_fit as job

    plan = job.plan(cfg, console)  # bad inputs are refused before a run folder exists
    with run_folder(cfg, overrides=ctx.args) as run_dir, _logged(run_dir, ctx), _resumable():
        job.run(plan, run_dir, console)


def main() -> None:
    """Console entry point: user errors print one line and exit 1, never a traceback."""
    try:
        app(standalone_mode=True)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
    except (ValueError, RuntimeError) as err:
        # the other user errors' classes live beside torch code: imported only once one is raised,
        # so --help and config errors do not wait for torch
        from lhopt_cli.control.checkpoint import PolicyFileError
        from lhopt_cli.control.protocol import ProtocolError
        from lhopt_cli.results.store import StoreError
        from lhopt_cli.tasks.data import DataUnavailable

        if isinstance(err, RuntimeError) and "can't allocate memory" in str(err):  # torch's allocator
            tried = re.search(r"allocate (\d+) bytes", str(err))
            size = f" ({int(tried.group(1)) / 2**30:.3g} GiB at once)" if tried else ""
            typer.echo(f"error: out of memory{size}: the task's sizes (task.*) or the batch are too large for this "
                       "machine", err=True)
            sys.exit(1)
        if not isinstance(err, (StoreError, DataUnavailable, PolicyFileError, ProtocolError)):
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
    except MemoryError:
        typer.echo("error: out of memory: the task's sizes (task.*) or the batch are too large for this machine",
                   err=True)
        sys.exit(1)
    except OSError as err:  # the file system said no (a full or read-only disk): one line, no traceback
        where = f": {err.filename}" if err.filename else ""
        typer.echo(f"error: {err.strerror or err}{where}", err=True)
        sys.exit(1)

