"""Speedups on the held-out test suite: a policy beside the untuned choices (AdamW's defaults, one
fixed setting chosen on validation, Prodigy, Schedule-Free) and the oracle, against the best of the
5 x 7 AdamW grid and against the extended grid (learning rates 1e-5 to 1e-1).

    python scripts/bench_speedup.py                      # the bundled policy, the test suite, 3 seeds
    python scripts/bench_speedup.py --policy outputs/run/best.pt --label best [--greedy|--sampled]
    python scripts/bench_speedup.py --suite validation   # the suite checkpoints are chosen on
    python scripts/bench_speedup.py --out /tmp/b --suite smoke --seeds 0 debug=smoke   # trailing: Hydra overrides

Runs `lhopt evaluate suite=<suite>` (the real CLI): the suite's stored reference grids
(benchmarks/grids/<suite>/) are read, so only the compared methods run. Prints per task the median
[min, max] over seeds of each method's speedup, the median against the extended grid and whether
the grid's best lies on its edge; then per method the median over tasks and the worst task, and the
goals (median over tasks >= 1.5x, every task >= 1.0x). Writes speedup_<suite>.md (the table) and
speedup_<suite>.png (speedup per task with its spread, one colour per method) into the run folder
(<out>/<label>/<suite>/).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from lhopt_cli.plots import speedup_plot
from lhopt_cli.results.summary import overall, per_task

GOAL_MEDIAN, GOAL_EVERY = 1.5, 1.0
OWN_KEYS = {"policy": "--policy", "suite": "--suite", "seeds": "--seeds", "run_dir": "--out/--label",
            "greedy": "--greedy/--sampled", "tasks": "--suite"}  # overrides this script sets itself


def evaluate(args: argparse.Namespace) -> tuple[pd.DataFrame, str]:
    run_dir = args.out / args.label / args.suite
    command = [sys.executable, "-m", "lhopt_cli", "evaluate", f"policy={args.policy}", f"suite={args.suite}",
               f"seeds=[{','.join(map(str, args.seeds))}]", f"run_dir={run_dir}", *args.overrides]
    if args.greedy is not None:  # otherwise evaluate's default
        command.append(f"greedy={str(args.greedy).lower()}")
    if args.workers:
        command.append(f"executor.workers={args.workers}")
    shown = "lhopt " + " ".join(command[3:])
    print("$ " + shown, flush=True)
    code = subprocess.run(command).returncode
    if code:  # evaluate has said what went wrong, in one line
        sys.exit(code)
    return pd.read_csv(run_dir / "summary.csv"), shown


def markdown(table: pd.DataFrame, summary: pd.DataFrame, totals: pd.DataFrame) -> str:
    methods = list(totals.method)
    first_seed = int(summary.seed.min())
    lines = [f"| task | best of 35 (seed {first_seed}) | " + " | ".join(f"{m} (vs extended)" for m in methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for task in table.task.unique():
        best = summary[(summary.task == task) & (summary.method == "best_baseline") & (summary.seed == first_seed)].iloc[0]
        edge = " (edge)" if table[table.task == task].edge.any() else ""
        cells = []
        for method in methods:
            r = table[(table.task == task) & (table.method == method)].iloc[0]
            cells.append(f"{r['median']:.2f}x [{r['min']:.2f}, {r['max']:.2f}] ({r['extended']:.2f}x)")
        lines.append(f"| {task} | lr {best.best_lr:g} {best.best_schedule}{edge} | " + " | ".join(cells) + " |")
    lines.append("| **median over tasks** | | " + " | ".join(
        f"**{r.median:.2f}x** ({r.extended:.2f}x)" for r in totals.itertuples()) + " |")
    lines.append("| worst task | | " + " | ".join(f"{r.worst_task} {r.worst:.2f}x" for r in totals.itertuples()) + " |")
    lines.append("| ratio to fixed_default (median over tasks) | | " + " | ".join(
        "" if r.vs_fixed_default is None or pd.isna(r.vs_fixed_default) else f"{r.vs_fixed_default:.2f}x"
        for r in totals.itertuples()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--policy", default="default", help="a policy.pt, or `default` (the bundled one)")
    parser.add_argument("--label", default="bundled", help="names the run folder under --out")
    parser.add_argument("--suite", default="test", help="test (reported on), validation_heldout or validation (chosen on), test_short, smoke")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench-speedup"))
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--greedy", dest="greedy", action="store_const", const=True,
                         help="argmax actions (evaluate's default)")
    actions.add_argument("--sampled", dest="greedy", action="store_const", const=False,
                         help="actions sampled from the policy (seeded)")
    parser.add_argument("--workers", type=int, help="grid worker processes for runs not stored (default: the executor's)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for lhopt evaluate (e.g. debug=smoke)")
    args = parser.parse_args()
    for override in args.overrides:
        key = override.split("=")[0].lstrip("+~")
        if key in OWN_KEYS:
            sys.exit(f"error: {override}: set it with {OWN_KEYS[key]}, so the tables and folders say what ran")

    start = time.perf_counter()
    summary, command = evaluate(args)
    wall = time.perf_counter() - start
    table = per_task(summary)
    compared = table[table.method != "best_baseline"]
    totals = overall(compared)
    print(f"\nspeedup over the best of 35 (median over seeds {args.seeds} [min, max]; vs the extended grid), "
          f"suite {args.suite}, policy {args.policy}")
    print(f"{'task':<28}{'method':<14}{'speedup':>24}{'vs extended':>13}{'final loss':>12}")
    for r in compared.itertuples():
        print(f"{r.task + (' (edge)' if r.edge else ''):<28}{r.method:<14}"
              f"{f'{r.median:.2f}x [{r.min:.2f}, {r.max:.2f}]':>24}{f'{r.extended:.2f}x':>13}{r.final_loss:>12.4f}")
    print()
    for r in totals.itertuples():
        ratio = "" if r.vs_fixed_default is None or pd.isna(r.vs_fixed_default) else f"; {r.vs_fixed_default:.2f}x fixed_default"
        print(f"{r.method:<14} median over tasks {r.median:.2f}x (vs extended {r.extended:.2f}x); "
              f"worst task {r.worst_task} {r.worst:.2f}x{ratio}")
    lhopt = totals.set_index("method").loc["lhopt"]
    if lhopt.vs_fixed_default is not None and not pd.isna(lhopt.vs_fixed_default):
        print(f"lhopt against the untuned fixed_default (one setting for every task, chosen on validation): "
              f"median over tasks of the per-task ratio {lhopt.vs_fixed_default:.2f}x")
    print(f"lhopt goals: median over tasks >= {GOAL_MEDIAN}x {'met' if lhopt['median'] >= GOAL_MEDIAN else 'NOT met'}; "
          f"every task >= {GOAL_EVERY}x {'met' if lhopt['worst'] >= GOAL_EVERY else 'NOT met'}")
    run_dir = args.out / args.label / args.suite
    figure = speedup_plot(compared, f"{args.suite} suite, policy {args.policy}: median [min, max] over seeds {args.seeds}",
                          run_dir / f"speedup_{args.suite}.png")
    table_md = markdown(table, summary, totals)
    (run_dir / f"speedup_{args.suite}.md").write_text(
        f"{date.today().isoformat()}, `{command}`, {wall:.0f} s\n\n{table_md}\n")
    print(f"\nwall time {wall:.0f} s; figure {figure}; table {run_dir / f'speedup_{args.suite}.md'}")
    if args.markdown:
        print("\n" + table_md)


if __name__ == "__main__":
    main()
