"""Speedup of a policy over the best of the 5 x 7 AdamW grid on the held-out benchmark tasks.

    python scripts/bench_speedup.py                      # the bundled policy, 5 tasks x 3 seeds
    python scripts/bench_speedup.py --policy outputs/default_policy/policy.pt --label it500
    python scripts/bench_speedup.py --markdown           # also a table to paste into docs/results.md

Runs `lhopt evaluate` (the real CLI) with one grid store shared by every policy benchmarked
(outputs/bench-speedup/grid: the 525 baseline runs are trained once), then prints, per task, the
median speedup over the seeds with its range, and the goals: median over tasks >= 1.5x, every
task >= 1.0x. char_lm is the modality the default policy never saw in meta-training.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TASKS = ["mlp_mnist", "cnn_mnist", "mnist1d_conv", "nqm", "char_lm"]
GOAL_MEDIAN, GOAL_EVERY = 1.5, 1.0


def evaluate(policy: str, label: str, tasks: list[str], seeds: list[int], out: Path, greedy: bool | None,
             workers: int | None) -> pd.DataFrame:
    run_dir = out / label
    command = [sys.executable, "-m", "lhopt_cli", "evaluate", f"policy={policy}", f"tasks=[{','.join(tasks)}]",
               f"seeds=[{','.join(map(str, seeds))}]", f"grid_dir={out / 'grid'}", f"run_dir={run_dir}"]
    if greedy is not None:  # otherwise evaluate's default
        command.append(f"greedy={str(greedy).lower()}")
    if workers:
        command.append(f"executor.workers={workers}")
    print("$ lhopt " + " ".join(command[3:]), flush=True)
    subprocess.run(command, check=True)
    return pd.read_csv(run_dir / "summary.csv")


def per_task(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (task, method), group in summary.groupby(["task", "method"], sort=False):
        s = group.speedup.to_numpy(float)
        rows.append({"task": task, "method": method, "median": float(np.median(s)), "min": float(s.min()),
                     "max": float(s.max()), "final_loss": float(group.final_valid_loss.median())})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, summary: pd.DataFrame) -> str:
    methods = [m for m in table.method.unique() if m != "best_baseline"]
    lines = ["| task | best of 35 (seed 0) | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for task in table.task.unique():
        best = summary[(summary.task == task) & (summary.method == "best_baseline")].iloc[0]
        cells = []
        for method in methods:
            r = table[(table.task == task) & (table.method == method)].iloc[0]
            cells.append(f"{r['median']:.2f}x [{r['min']:.2f}, {r['max']:.2f}]")
        lines.append(f"| {task} | lr {best.best_lr:g} {best.best_schedule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="default", help="a policy.pt, or `default` (the bundled one)")
    parser.add_argument("--label", default="bundled", help="names the run folder under --out")
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench-speedup"))
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--greedy", dest="greedy", action="store_const", const=True,
                         help="argmax actions (evaluate's default)")
    actions.add_argument("--sampled", dest="greedy", action="store_const", const=False,
                         help="actions sampled from the policy (seeded)")
    parser.add_argument("--workers", type=int, help="grid worker processes (default: the executor's)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    args = parser.parse_args()

    summary = evaluate(args.policy, args.label, args.tasks, args.seeds, args.out, args.greedy, args.workers)
    table = per_task(summary)
    print(f"\nspeedup over the best of 35 (median over seeds {args.seeds} [min, max]); policy: {args.policy}")
    print(f"{'task':<14}{'method':<16}{'speedup':>24}{'final loss':>12}")
    for r in table.itertuples():
        if r.method != "best_baseline":
            print(f"{r.task:<14}{r.method:<16}{f'{r.median:.2f}x [{r.min:.2f}, {r.max:.2f}]':>24}{r.final_loss:>12.4f}")
    lhopt = table[table.method == "lhopt"].set_index("task")["median"]
    overall = float(np.median(lhopt))
    worst = lhopt.idxmin()
    print(f"\nlhopt: median over tasks {overall:.2f}x (goal >= {GOAL_MEDIAN}x: {'met' if overall >= GOAL_MEDIAN else 'not met'}); "
          f"worst task {worst} {lhopt[worst]:.2f}x (goal every task >= {GOAL_EVERY}x: "
          f"{'met' if lhopt.min() >= GOAL_EVERY else 'not met'})")
    if args.markdown:
        print("\n" + markdown(table, summary))


if __name__ == "__main__":
    main()
