"""A suite's stored reference grid, member by member: which learning rate and schedule is best on
each task and seed, and how one setting does over a whole suite.

The stored grids (benchmarks/grids/<suite>/, scripts/suites/make_reference_grids.py) hold every member's
runs validated at the observation protocol's points; config/suites.py finds a member's runs by
its task config as the grid composed it, and hands them here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from lhopt_cli.results.speedup import ema, padded, speedup

PAPER_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # conf/grid/default.yaml
TEST_SUITES = ("test", "test_short")  # reported on only: nothing is chosen or tuned on them
HELDOUT_SUITES = ("validation_heldout", "validation_heldout_short")  # leave-kinds-out: chosen on


def runs_by_setting(curves: pd.DataFrame, seed: int) -> tuple[np.ndarray, dict[tuple[float, str], np.ndarray]]:
    """The validation steps (P,) and {(lr, schedule): valid-loss curve (P,)} of one seed's runs; a
    run that stopped early is padded with inf (padded)."""
    part = curves[curves.seed == seed]
    runs = {(float(g.lr0.iloc[0]), g.schedule.iloc[0]): g.sort_values("step") for _, g in part.groupby("run_id")}
    steps = max(runs.values(), key=len).step.to_numpy(float)
    return steps, {key: padded(g.valid_loss, len(steps)) for key, g in runs.items()}


def best_setting(runs: dict[tuple[float, str], np.ndarray], lrs=None) -> tuple[float, str]:
    """The (lr, schedule) of lowest smoothed final loss (as `lhopt evaluate` picks the best of the
    grid), among the runs whose lr is in `lrs` (default: all)."""
    kept = {k: c for k, c in runs.items() if lrs is None or np.isclose(k[0], lrs).any()}
    return min(kept, key=lambda k: ema(kept[k])[-1])


def setting_scores(members: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every (lr, schedule) that every member ran, scored per member as its median speedup over
    seeds against that seed's paper-grid envelope (METHOD section 8, docs/method.md). Returns
    columns lr, schedule, member, speedup."""
    rows = []
    for member, curves in members.items():
        for seed in sorted(curves.seed.unique()):
            steps, runs = runs_by_setting(curves, int(seed))
            paper = [c for (lr, _), c in runs.items() if np.isclose(lr, PAPER_LRS).any()]
            rows += [{"lr": lr, "schedule": schedule, "member": member, "seed": int(seed),
                      "speedup": speedup(steps, curve, paper)} for (lr, schedule), curve in runs.items()]
    table = pd.DataFrame(rows)
    per_member = table.groupby(["lr", "schedule", "member"], as_index=False).speedup.median()
    everywhere = per_member.groupby(["lr", "schedule"]).member.transform("nunique") == len(members)
    return per_member[everywhere]
