"""Speedups on the held-out test suite: a policy beside the untuned choices (AdamW's defaults, one
fixed setting chosen on validation, Prodigy, Schedule-Free) and the oracle, against the best of the
5 x 7 AdamW grid and against the extended grid (learning rates 1e-5 to 1e-1).

    python scripts/bench/bench_speedup.py                      # the bundled policy, the test suite, 3 seeds
    python scripts/bench/bench_speedup.py --policy outputs/run/best.pt --label best [--greedy|--sampled]
    python scripts/bench/bench_speedup.py --suite validation   # the suite checkpoints are chosen on
    python scripts/bench/bench_speedup.py --out /tmp/b --suite smoke --seeds 0 debug=smoke   # trailing: Hydra overrides

Runs `lhopt evaluate suite=<suite>` (the real CLI): the suite's stored reference grids
(benchmarks/grids/<suite>/) are read, so only the compared methods run. Prints per task the median
[min, max] over seeds of each method's speedup, the median against the extended grid and whether
the grid's best lies on its edge; then per method the median over tasks with its 95% bootstrap
interval over tasks and seeds, the worst task and the ratio to fixed_default (with its interval);
the fewest of the seeds at which lhopt's interval against fixed_default excludes 1.0; and the
goals the project holds (docs/results.md). Writes speedup_<suite>.md (the table) and
speedup_<suite>.png (speedup per task with its spread, one colour per method) into the run folder
(<out>/<label>/<suite>/). Every run is on one torch thread (docs/method.md), so the same command
writes the same summary.csv whatever OMP_NUM_THREADS or --workers.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd

from lhopt_cli.support.plots import speedup_plot
from lhopt_cli.results.summary import UNTUNED, bootstrap_intervals, comparators_beaten, overall, per_task, rank_among_untuned

# The goals the project holds for lhopt on the test suite (docs/results.md): the median over tasks
# against the best of 35, the median per-task ratio to fixed_default, the worst task, and on how
# many tasks it is ahead of both tuning-free optimizers
GOAL_MEDIAN, GOAL_VS_FIXED, GOAL_EVERY, GOAL_AHEAD_SHARE = 1.0, 1.5, 0.6, 10 / 12
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


def ratio_cell(r) -> str:
    """A totals row's median ratio to fixed_default with its interval ('' without fixed_default)."""
    if r.vs_fixed_default is None or pd.isna(r.vs_fixed_default):
        return ""
    return f"{r.vs_fixed_default:.2f}x [{r.vs_fixed_default_lo:.2f}, {r.vs_fixed_default_hi:.2f}]"


def seeds_needed(summary: pd.DataFrame) -> int | None:
    """The fewest of the summary's seeds (taken in order) from which on lhopt's 95% interval
    against fixed_default excludes 1.0 at every count up to all of them; None if the interval of
    all the seeds holds 1.0 (a first seed that happened to exclude it proves nothing)."""
    seeds = sorted(set(summary.seed))
    needed = None
    for k in range(len(seeds), 0, -1):
        row = bootstrap_intervals(summary[summary.seed.isin(seeds[:k])]).set_index("method").loc["lhopt"]
        if not (row.vs_fixed_default_lo > 1 or row.vs_fixed_default_hi < 1):
            break
        needed = k
    return needed


def ahead_of(table: pd.DataFrame, method: str, others: list[str]) -> tuple[int, int] | None:
    """On how many tasks `method`'s median over seeds is above every one of `others`, of how many
    tasks (None if none of `others` ran)."""
    by = table.pivot_table(index="task", columns="method", values="median")
    present = [o for o in others if o in by]
    if not present:
        return None
    return int((by[method].to_numpy()[:, None] > by[present].to_numpy()).all(1).sum()), len(by)


def markdown(table: pd.DataFrame, summary: pd.DataFrame, totals: pd.DataFrame) -> str:
    methods = list(totals.method)
    first_seed = int(summary.seed.min())
    beaten = comparators_beaten(table)
    others = len([m for m in UNTUNED if m in methods])
    lines = [f"| task | best of 35 (seed {first_seed}) | " + " | ".join(f"{m} (vs extended)" for m in methods)
             + " | comparators lhopt beats |",
             "|---|---|" + "---|" * len(methods) + "---|"]
    for task in table.task.unique():
        best = summary[(summary.task == task) & (summary.method == "best_baseline") & (summary.seed == first_seed)].iloc[0]
        edge = " (edge)" if table[table.task == task].edge.any() else ""
        cells = []
        for method in methods:
            r = table[(table.task == task) & (table.method == method)].iloc[0]
            cells.append(f"{r['median']:.2f}x [{r['min']:.2f}, {r['max']:.2f}] ({r['extended']:.2f}x)")
        count = f"{beaten[task]} of {others}" if task in beaten else ""
        lines.append(f"| {task} | lr {best.best_lr:g} {best.best_schedule}{edge} | " + " | ".join(cells) + f" | {count} |")
    lines.append("| **median over tasks** [95% interval over tasks and seeds] | | " + " | ".join(
        f"**{r.median:.2f}x** [{r.median_lo:.2f}, {r.median_hi:.2f}] ({r.extended:.2f}x)" for r in totals.itertuples()) + " | |")
    lines.append("| worst task | | " + " | ".join(f"{r.worst_task} {r.worst:.2f}x" for r in totals.itertuples()) + " | |")
    lines.append("| ratio to fixed_default (median over tasks) [95% interval] | | " + " | ".join(
        ratio_cell(r) for r in totals.itertuples()) + " | |")
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
    totals = overall(compared, summary)
    print(f"\nspeedup over the best of 35 (median over seeds {args.seeds} [min, max]; vs the extended grid), "
          f"suite {args.suite}, policy {args.policy}")
    print(f"{'task':<28}{'method':<14}{'speedup':>24}{'vs extended':>13}{'final loss':>12}")
    for r in compared.itertuples():
        print(f"{r.task + (' (edge)' if r.edge else ''):<28}{r.method:<14}"
              f"{f'{r.median:.2f}x [{r.min:.2f}, {r.max:.2f}]':>24}{f'{r.extended:.2f}x':>13}{r.final_loss:>12.4f}")
    print("\nper method, the median over tasks [95% bootstrap interval over tasks and seeds]:")
    for r in totals.itertuples():
        ratio = ratio_cell(r)
        print(f"{r.method:<14} median over tasks {r.median:.2f}x [{r.median_lo:.2f}, {r.median_hi:.2f}] "
              f"(vs extended {r.extended:.2f}x); worst task {r.worst_task} {r.worst:.2f}x"
              + (f"; {ratio} fixed_default" if ratio else ""))
    rank = rank_among_untuned(totals)
    if rank is not None and rank[1] > 1:
        beaten = comparators_beaten(compared)
        print(f"lhopt ranks {rank[0]} of {rank[1]} among the choices that need no tuning (median over tasks); "
              f"comparators it beats per task: " + ", ".join(f"{t} {n}/{rank[1] - 1}" for t, n in beaten.items()))
    lhopt = totals.set_index("method").loc["lhopt"]
    goals = [(f"median over tasks >= {GOAL_MEDIAN}x", lhopt["median"] >= GOAL_MEDIAN),
             (f"every task >= {GOAL_EVERY}x", lhopt["worst"] >= GOAL_EVERY)]
    defined = lhopt.vs_fixed_default is not None and not pd.isna(lhopt.vs_fixed_default)
    if "fixed_default" in set(totals.method) and not defined:
        print("lhopt against the untuned fixed_default: no ratio (fixed_default scored 0x on every task)")
        goals.insert(1, (f"ratio to fixed_default >= {GOAL_VS_FIXED}x (no ratio)", False))
    elif "fixed_default" in set(totals.method):
        needed = seeds_needed(summary)
        verdict = (f"excludes 1.0 from {needed} seed{'s' * (needed > 1)} on" if needed is not None else
                   f"does not exclude 1.0 at {len(args.seeds)} seeds: more seeds are needed to tell them apart")
        print(f"lhopt against the untuned fixed_default (one setting for every task, chosen on validation): "
              f"median over tasks of the per-task ratio {ratio_cell(lhopt)}; the interval {verdict}")
        shares = {what: bootstrap_intervals(summary, resample=(what,)).set_index("method").loc["lhopt"]
                  for what in ("seeds", "tasks")}
        print("  its width, drawn apart: " + "; ".join(
            f"over the {what} alone [{r.vs_fixed_default_lo:.2f}, {r.vs_fixed_default_hi:.2f}]"
            for what, r in shares.items()) + " (more seeds narrow only the first)")
        goals.insert(1, (f"ratio to fixed_default >= {GOAL_VS_FIXED}x", lhopt.vs_fixed_default >= GOAL_VS_FIXED))
    ahead = ahead_of(compared, "lhopt", ["prodigy", "schedulefree"])
    if ahead is not None:
        target = math.ceil(GOAL_AHEAD_SHARE * ahead[1] - 1e-9)  # 10 of 12, 14 of 16: the text is the rule
        goals.append((f"ahead of the tuning-free optimizers on >= {target} of {ahead[1]} tasks (is on {ahead[0]})",
                      ahead[0] >= target))
    print("lhopt goals: " + "; ".join(f"{text} {'met' if met else 'NOT met'}" for text, met in goals))
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
