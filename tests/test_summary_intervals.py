"""The suite's headline with its bootstrap interval over tasks and seeds (results/summary.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lhopt_cli.results.summary import bootstrap_intervals, overall, per_task


def _summary(speedups: dict[str, np.ndarray]) -> pd.DataFrame:
    """evaluate's summary.csv for `speedups[method]` of shape (tasks, seeds)."""
    rows = []
    for method, values in speedups.items():
        for t, row in enumerate(values):
            for s, v in enumerate(row):
                rows.append({"task": f"task{t}", "seed": s, "method": method, "speedup": float(v),
                             "speedup_extended": float(v), "best_at_edge": False, "final_valid_loss": 1.0})
    return pd.DataFrame(rows)


def test_a_method_twice_as_fast_on_every_seed_has_the_ratio_two_with_no_spread():
    rng = np.random.default_rng(3)
    fixed = np.exp(rng.normal(-0.5, 0.4, size=(12, 3)))
    table = bootstrap_intervals(_summary({"fixed_default": fixed, "lhopt": 2 * fixed})).set_index("method")
    # paired: one draw of seeds for both methods, so the ratio is 2 in every resample
    assert np.isclose(table.loc["lhopt", "vs_fixed_default_lo"], 2) and np.isclose(table.loc["lhopt", "vs_fixed_default_hi"], 2)
    assert table.loc["lhopt", "median_lo"] < table.loc["lhopt", "median_hi"]  # the tasks differ: a real spread


def test_the_interval_holds_the_median_narrows_with_agreeing_seeds_and_is_the_same_each_time():
    rng = np.random.default_rng(4)
    level = np.exp(rng.normal(0, 0.3, size=(12, 1)))
    noisy = level * np.exp(rng.normal(0, 0.5, size=(12, 3)))
    calm = level * np.exp(rng.normal(0, 0.02, size=(12, 3)))
    summary = _summary({"noisy": noisy, "calm": calm})
    totals = overall(per_task(summary), summary).set_index("method")
    for method in ("noisy", "calm"):
        assert totals.loc[method, "median_lo"] <= totals.loc[method, "median"] <= totals.loc[method, "median_hi"]
    width = totals.median_hi - totals.median_lo
    assert width["calm"] < width["noisy"]
    assert totals.vs_fixed_default.isna().all() and totals.vs_fixed_default_lo.isna().all()  # no fixed_default ran
    again = overall(per_task(summary), summary).set_index("method")
    pd.testing.assert_frame_equal(totals, again)  # seeded: the same summary, the same interval


def test_a_method_missing_on_a_task_is_bootstrapped_over_the_tasks_it_has():
    values = np.ones((4, 3))
    summary = _summary({"lhopt": values, "oracle": values * 3})
    summary = summary[~((summary.method == "oracle") & (summary.task == "task0"))]
    table = bootstrap_intervals(summary, resamples=500).set_index("method")
    assert table.loc["oracle", "median_lo"] == table.loc["oracle", "median_hi"] == 3


def test_drawing_the_seeds_alone_or_the_tasks_alone_splits_the_width():
    rng = np.random.default_rng(5)
    same_seeds = np.repeat(np.exp(rng.normal(0, 0.5, size=(12, 1))), 3, axis=1)  # tasks differ, seeds agree
    table = bootstrap_intervals(_summary({"m": same_seeds}), resample=("seeds",)).set_index("method")
    assert table.loc["m", "median_lo"] == table.loc["m", "median_hi"]  # nothing left to draw
    table = bootstrap_intervals(_summary({"m": same_seeds}), resample=("tasks",)).set_index("method")
    assert table.loc["m", "median_lo"] < table.loc["m", "median_hi"]


def test_a_task_where_fixed_default_scored_zero_has_no_ratio_in_the_interval_as_in_the_point():
    fixed = np.array([[0.5, 0.6, 0.55], [0.8, 0.7, 0.75], [0.0, 0.0, 0.0]])
    summary = _summary({"fixed_default": fixed, "lhopt": fixed + 0.2})
    totals = overall(per_task(summary), summary).set_index("method")
    lo, hi = totals.loc["lhopt", ["vs_fixed_default_lo", "vs_fixed_default_hi"]]
    assert np.isfinite([lo, hi]).all() and lo <= totals.loc["lhopt", "vs_fixed_default"] <= hi
