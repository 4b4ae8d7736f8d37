"""How far a single AdamW run of the stored grid gets past the best of 35: the ceiling of choosing well.

    python scripts/suites/grid_headroom.py [--suite test] [--grids benchmarks/grids] [--markdown]

For every task and seed of a suite's stored grid (scripts/suites/make_reference_grids.py), each run of the
whole grid (the paper's 5 learning rates and the extended ones, x 7 schedules) is scored with the
speedup `lhopt evaluate` reports (docs/method.md) over the envelope of the paper's 35. The
best of them is what an oracle gets that knows, before the run, which single setting of the
extended grid will do best on this task and seed. A controller that reaches the speedup goals
(median >= 1.5x, every task >= 1.0x) has to beat that oracle wherever the oracle is below them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lhopt_cli.results.speedup import best_single_run
from lhopt_cli.results.store import StoreError, load
from lhopt_cli.config.compose import ConfigError
from lhopt_cli.config.suites import member_task_json, suite_config
from lhopt_cli.results.suite_grid import PAPER_LRS



def ceilings(curves: pd.DataFrame, names: dict[str, str] | None = None) -> pd.DataFrame:
    """Per task instance and seed: the best single run's speedup over the paper grid's envelope.

    `curves`: the stored grid's results table (one row per run and evaluation point, columns
    task, task_params, seed, lr0, schedule, step, valid_loss). Returns columns task (the kind,
    numbered where a suite holds several instances of it), seed, speedup, lr0, schedule,
    extended (the best run's lr lies outside the paper's 5). `names`: {task_params: member id},
    the suite's own names for its members (then only those are scored)."""
    if names is not None:
        curves = curves[curves.task_params.isin(names)]
    label, count = {}, {}
    for task, params in sorted(set(zip(curves.task, curves.task_params))):
        label[task, params] = f"{task}_{count.get(task, 0)}"
        count[task] = count.get(task, 0) + 1
    label = {key: name if count[key[0]] > 1 else key[0] for key, name in label.items()}
    if names is not None:
        label = {key: names[key[1]] for key in label}
    rows = []
    for (task, params, seed), runs in curves.groupby(["task", "task_params", "seed"], sort=True):
        by_run = {key: run.sort_values("step") for key, run in runs.groupby(["lr0", "schedule"])}
        steps = next(iter(by_run.values())).step.to_numpy(float)
        paper = [run.valid_loss.to_numpy(float) for (lr, _), run in by_run.items()
                 if np.isclose(lr, PAPER_LRS).any()]
        best, (lr, schedule) = best_single_run(steps, {key: run.valid_loss.to_numpy(float) for key, run in by_run.items()},
                                               paper)
        rows.append({"task": label[task, params], "seed": int(seed), "speedup": best, "lr0": lr,
                     "schedule": schedule, "extended": not np.isclose(lr, PAPER_LRS).any()})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="test", help="a folder of --grids (default: test)")
    parser.add_argument("--grids", type=Path, default=Path("benchmarks/grids"))
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    folder = args.grids / args.suite
    if not (folder / "results.parquet").is_file():
        sys.exit(f"error: no stored grid at {folder / 'results.parquet'} (scripts/suites/make_reference_grids.py writes one)")
    try:
        curves = load(folder / "results.parquet")
        try:  # a suite's grid may still hold runs of members it has since replaced: score its own
            names = {member_task_json(m): m["id"] for m in suite_config(args.suite)["members"]}
        except ConfigError:
            names = None  # a folder that is no suite of conf/suite/
        table = ceilings(curves, names)
    except (StoreError, FileNotFoundError, KeyError, StopIteration) as error:
        sys.exit(f"error: no readable stored grid in {folder}: {error}")
    if table.empty:
        sys.exit(f"error: the stored grid in {folder} holds no runs")
    if np.isclose(curves.lr0.to_numpy(float)[:, None], PAPER_LRS).any(axis=1).all():
        print(f"note: the grid in {folder} holds only the paper's 5 learning rates: the ceiling is the best of "
              "35 itself (1.00x) unless a run beats the envelope it is part of", file=sys.stderr)
    per_task = table.groupby("task").agg(median=("speedup", "median"), low=("speedup", "min"),
                                         high=("speedup", "max"))
    if args.markdown:
        print("| task | best single run over the best of 35: median [min, max] over seeds | settings (seeds in order) |")
        print("|---|---|---|")
    for task, row in per_task.iterrows():
        runs = table[table.task == task]
        settings = ", ".join(f"{r.lr0:g} {r.schedule}" for r in runs.itertuples())
        figures = f"{row['median']:.2f}x [{row['low']:.2f}, {row['high']:.2f}]"
        print(f"| {task} | {figures} | {settings} |" if args.markdown else f"{task:20s} {figures}  ({settings})")
    median = per_task["median"].median()
    below = [task for task, value in per_task["median"].items() if value < 1.5]
    print(f"median over tasks {median:.2f}x; the oracle's single run is below 1.5x on "
          f"{len(below)} of {len(per_task)} tasks")


if __name__ == "__main__":
    main()
