"""Check a held-out suite against the benchmark's criteria, on its stored reference grid.

    python scripts/suites/check_suite.py --suite test                   # exit 1 if a criterion fails
    python scripts/suites/check_suite.py --suite validation_heldout --grids benchmarks/grids

A suite can tell tuning from not tuning only if its tasks need different learning rates, run long
enough for schedules to matter, and are cheap enough to store grids for (docs/results.md). Per task
(median over seeds): the best learning rate of the extended grid and of the paper's 35, the steps
of its one epoch and the CPU seconds per run (the stored grid's MANIFEST.json). The criteria:

- size: a test suite has >= 10 tasks of >= 6 kinds, a validation suite >= 12 of >= 4 kinds;
- length: every run 500 to 4,000 steps, the median >= 1,000; at most about 20 CPU s per run;
- spread: >= a third of the tasks have their best lr at or below 1e-3, >= a third at or above 3e-3;
- edges: at most a quarter have their best of 35 at the paper grid's edge (1e-4 or 1e-2), and none
  its extended-grid best at the extended grid's edge;
- kinds: no kind is drawn by a training family, and no test kind is a validation kind.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lhopt_cli.config.compose import ConfigError, compose, known_options
from lhopt_cli.results.store import StoreError
from lhopt_cli.config.suites import member_curves, suite_config
from lhopt_cli.results.suite_grid import HELDOUT_SUITES, PAPER_LRS, TEST_SUITES, best_setting, runs_by_setting

MIN_SIZE = {"test": (10, 6), "validation": (12, 4)}  # (tasks, kinds)
STEPS, MEDIAN_STEPS, CPU_S_PER_RUN = (500, 4000), 1000, 20.0


def member_table(suite: str, grids: Path) -> pd.DataFrame:
    """One row per member: kind, steps, CPU s per run, (median over seeds) the best lr of the
    extended grid and of the paper's 35, the extended grid's learning rates, and the best setting
    of each seed."""
    members = {m["id"]: m for m in suite_config(suite)["members"]}
    manifest_path = grids / suite / "MANIFEST.json"
    calls = json.loads(manifest_path.read_text())["calls"] if manifest_path.exists() else []
    cpu = {}
    for call in calls:  # the latest call that ran a member's grid from scratch records its cost
        for member, seconds in call.get("member_cpu_s", {}).items():
            cpu[member] = seconds if seconds > 1 else cpu.get(member, math.nan)
    rows = []
    for member, curves in member_curves(suite, grids).items():
        if curves.empty:
            raise ConfigError(f"{suite}/{member}: no runs in the stored grid {grids / suite} "
                              "(python scripts/suites/make_reference_grids.py --suites " + suite + ")")
        seeds = sorted(curves.seed.unique())
        best, paper = [], []
        for seed in seeds:
            _, runs = runs_by_setting(curves, int(seed))
            best.append(best_setting(runs))
            paper.append(best_setting(runs, PAPER_LRS)[0])
        runs_per_seed = curves[curves.seed == seeds[0]].run_id.nunique()
        rows.append({"member": member, "kind": members[member]["task"], "steps": int(curves.total_steps.max()),
                     "cpu_s_per_run": cpu.get(member, math.nan) / (runs_per_seed * len(seeds)),
                     "best_lr": float(np.median([lr for lr, _ in best])), "best_lr_35": float(np.median(paper)),
                     "settings": ", ".join(f"{lr:g} {schedule}" for lr, schedule in best),
                     "extended_lrs": sorted(curves.lr0.unique())})
    return pd.DataFrame(rows)


def training_kinds() -> set[str]:
    """Every kind a meta-training task family (conf/task_family/, but the held-out kinds' own) can draw."""
    families = [name for name in known_options("task_family") if name != "heldout"]
    return {kind for name in families for kind in compose("train_policy", [f"task_family={name}"]).task_family.kinds}


def criteria(suite: str, table: pd.DataFrame) -> list[tuple[str, bool]]:
    """(criterion with the measured figures, met) for each criterion of the module docstring."""
    role = "test" if suite in TEST_SUITES else "validation"
    tasks, kinds = MIN_SIZE[role]
    n = len(table)
    low = int((table.best_lr <= 1e-3 * 1.01).sum())
    high = int((table.best_lr >= 3e-3 * 0.99).sum())
    edge = int(np.isclose(table.best_lr_35.to_numpy()[:, None], [min(PAPER_LRS), max(PAPER_LRS)]).any(1).sum())
    grid_edges = [(min(lrs), max(lrs)) for lrs in table.extended_lrs]
    on_extended_edge = [m for m, lr, (lo, hi) in zip(table.member, table.best_lr, grid_edges) if np.isclose(lr, [lo, hi]).any()]
    others = HELDOUT_SUITES[:1] if role == "test" else TEST_SUITES[:1]
    other_kinds = {m["task"] for m in suite_config(others[0])["members"]}
    shared = sorted(set(table.kind) & other_kinds)
    drawn = sorted(set(table.kind) & training_kinds())
    steps = table.steps.to_numpy()
    return [
        (f"{n} tasks of {table.kind.nunique()} kinds (>= {tasks} of >= {kinds})", n >= tasks and table.kind.nunique() >= kinds),
        (f"steps {steps.min()} to {steps.max()} (within {STEPS[0]} to {STEPS[1]}), median {np.median(steps):.0f} "
         f"(>= {MEDIAN_STEPS})", STEPS[0] <= steps.min() and steps.max() <= STEPS[1] and np.median(steps) >= MEDIAN_STEPS),
        (f"at most {table.cpu_s_per_run.max():.1f} CPU s per run (<= about {CPU_S_PER_RUN:.0f})"
         if table.cpu_s_per_run.notna().all() else "CPU s per run: not recorded in MANIFEST.json for every member",
         not table.cpu_s_per_run.max() > CPU_S_PER_RUN * 1.1),
        (f"{low} of {n} tasks best at lr <= 1e-3 (>= a third)", 3 * low >= n),
        (f"{high} of {n} tasks best at lr >= 3e-3 (>= a third)", 3 * high >= n),
        (f"{edge} of {n} tasks with the best of 35 at the paper grid's edge (<= a quarter)", 4 * edge <= n),
        ("no best at the extended grid's edge" + (f" (at it: {', '.join(on_extended_edge)})" if on_extended_edge else ""),
         not on_extended_edge),
        (f"kinds shared with {others[0]}: {', '.join(shared) or 'none'}; drawn by a training family: "
         f"{', '.join(drawn) or 'none'}", not shared and not drawn),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="test", help="a held-out suite: test or validation_heldout (or their _short)")
    parser.add_argument("--grids", type=Path, default=Path(__file__).resolve().parents[2] / "benchmarks" / "grids")
    args = parser.parse_args()
    if args.suite not in TEST_SUITES + HELDOUT_SUITES:
        sys.exit(f"error: --suite {args.suite}: the criteria are for {', '.join(TEST_SUITES + HELDOUT_SUITES)}")
    try:
        table = member_table(args.suite, args.grids)
        results = criteria(args.suite, table)
    except (ConfigError, StoreError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    print(f"{'member':30s}{'kind':20s}{'steps':>6s}{'CPU s/run':>10s}{'best lr':>9s}{'of 35':>7s}  best setting per seed")
    for r in table.itertuples():
        print(f"{r.member:30s}{r.kind:20s}{r.steps:6d}{r.cpu_s_per_run:10.1f}{r.best_lr:9.0e}{r.best_lr_35:7.0e}  {r.settings}")
    print()
    for text, met in results:
        print(f"[{'met' if met else 'NOT met'}] {text}")
    failed = sum(not met for _, met in results)
    print(f"{args.suite}: {'all criteria met' if not failed else f'{failed} criteria not met'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
