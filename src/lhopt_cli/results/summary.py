"""Speedups summed up over a suite: per task over seeds, then per method over tasks.

`summary` is the table `lhopt evaluate` writes (summary.csv: one row per task, seed and method,
columns speedup, speedup_extended, best_at_edge, final_valid_loss).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

METHOD_ORDER = ("lhopt", "replay", "fixed_default", "adamw_default", "prodigy", "schedulefree", "dadapt_adam", "dog",
                "mechanic", "hypergradient", "range_test", "oracle")
# what a user gets without tuning: the fixed settings and the optimizers that set their own step size
UNTUNED = ("fixed_default", "adamw_default", "prodigy", "schedulefree", "dadapt_adam", "dog", "mechanic",
           "hypergradient", "range_test")


def _ordered(methods) -> list[str]:
    known = [m for m in METHOD_ORDER if m in set(methods)]
    return known + [m for m in dict.fromkeys(methods) if m not in known]


def per_task(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, method): speedup median, min, max over seeds; median against the
    extended grid; whether any seed's paper-grid best lies on the grid's edge; the median final loss."""
    rows = []
    for (task, method), group in summary.groupby(["task", "method"], sort=False):
        s = group.speedup.to_numpy(float)
        rows.append({"task": task, "method": method, "median": float(np.median(s)), "min": float(s.min()),
                     "max": float(s.max()), "extended": float(np.median(group.speedup_extended.to_numpy(float))),
                     "edge": bool(group.best_at_edge.any()), "final_loss": float(group.final_valid_loss.median())})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    rank = {m: i for i, m in enumerate(["best_baseline", *_ordered(table.method)])}
    order = {t: i for i, t in enumerate(dict.fromkeys(table.task))}
    return table.sort_values(["task", "method"], key=lambda c: c.map(order if c.name == "task" else rank),
                             kind="stable").reset_index(drop=True)


def ratio_to(table: pd.DataFrame, method: str, reference: str) -> float | None:
    """The median over tasks of `method`'s per-task median speedup divided by `reference`'s
    (both over the best of 35): how many times faster than that choice; None if either is absent."""
    by = table.pivot_table(index="task", columns="method", values="median")
    if method not in by or reference not in by:
        return None
    ratios = (by[method] / by[reference]).replace([np.inf, -np.inf], np.nan).dropna()
    return float(ratios.median()) if len(ratios) else None


def left_out_of_ratio(table: pd.DataFrame, reference: str = "fixed_default") -> list[str]:
    """The tasks ratio_to leaves out for `reference`: where its per-task median speedup is 0 (it
    never reached the best of 35's final loss) or not a number, so no ratio to it exists there."""
    by = table.pivot_table(index="task", columns="method", values="median")
    if reference not in by:
        return []
    values = by[reference]
    return [str(task) for task, value in values.items() if not (np.isfinite(value) and value > 0)]


def bootstrap_intervals(summary: pd.DataFrame, resamples: int = 10_000, level: float = 0.95,
                        seed: int = 0, resample: tuple[str, ...] = ("tasks", "seeds")) -> pd.DataFrame:
    """Percentile bootstrap intervals of the suite's headline numbers, resampling tasks and, within
    each drawn task, its seeds (both with replacement; Efron & Tibshirani 1993, ch. 13).

    `summary`: evaluate's summary.csv (task, seed, method, speedup). Each resample draws as many
    tasks as there are, then for each drawn task as many seeds as it has, takes every method's
    median over the drawn seeds, then the median over the drawn tasks; the ratio to fixed_default
    divides two methods' per-task medians of the same draw (paired: one draw of seeds for both).
    `resample` names what is drawn: ("seeds",) keeps the tasks and tells the seeds' share of the
    width, ("tasks",) keeps the seeds and tells the tasks' share (more seeds cannot narrow it).
    Seeded, so the same summary gives the same intervals. Returns one row per method: method,
    median_lo, median_hi and vs_fixed_default_lo, vs_fixed_default_hi (NaN without fixed_default).
    """
    by = summary.pivot_table(index=["task", "seed"], columns="method", values="speedup", aggfunc="first")
    tasks = list(dict.fromkeys(summary.task))
    seeds = sorted(set(summary.seed))
    cube = by.reindex(pd.MultiIndex.from_product([tasks, seeds])).to_numpy(float)  # (tasks * seeds, methods)
    cube = cube.reshape(len(tasks), len(seeds), -1)
    rng = np.random.default_rng(seed)
    drawn_tasks = rng.integers(len(tasks), size=(resamples, len(tasks)))
    drawn_seeds = rng.integers(len(seeds), size=(resamples, len(tasks), len(seeds)))
    if "tasks" not in resample:  # every resample holds every task once
        drawn_tasks = np.broadcast_to(np.arange(len(tasks)), drawn_tasks.shape)
    if "seeds" not in resample:
        drawn_seeds = np.broadcast_to(np.arange(len(seeds)), drawn_seeds.shape)
    # (resamples, tasks, methods): each drawn task's median over its drawn seeds
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a method absent from a task: NaN, skipped
        per_task_medians = np.nanmedian(cube[drawn_tasks[..., None], drawn_seeds], axis=2)
        headline = np.nanmedian(per_task_medians, axis=1)  # (resamples, methods)
        methods = list(by.columns)
        fixed = methods.index("fixed_default") if "fixed_default" in methods else None
        if fixed is not None:  # a task where fixed_default scored 0 has no ratio, as in ratio_to
            per_task_ratios = per_task_medians / per_task_medians[..., fixed:fixed + 1]
            per_task_ratios[~np.isfinite(per_task_ratios)] = np.nan
            ratios = np.nanmedian(per_task_ratios, axis=1)
        else:
            ratios = np.full_like(headline, np.nan)
        tail = 100 * (1 - level) / 2
        lo, hi = np.nanpercentile(headline, [tail, 100 - tail], axis=0)
        ratio_lo, ratio_hi = np.nanpercentile(ratios, [tail, 100 - tail], axis=0)
    return pd.DataFrame({"method": methods, "median_lo": lo, "median_hi": hi,
                         "vs_fixed_default_lo": ratio_lo, "vs_fixed_default_hi": ratio_hi})


def overall(table: pd.DataFrame, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per method other than the best of 35 (lhopt, the untuned choices, the other optimizers, the
    oracle, in that order): the median over tasks of the per-task medians against the best of 35
    and against the extended grid, the worst task, and the median ratio to fixed_default; given
    the per-seed `summary`, also their 95% bootstrap intervals over tasks and seeds
    (bootstrap_intervals: median_lo, median_hi, vs_fixed_default_lo, vs_fixed_default_hi)."""
    rows = []
    compared = table[table.method != "best_baseline"]
    for method in _ordered(compared.method):
        group = compared[compared.method == method]
        worst = group.loc[group["median"].idxmin()]
        rows.append({"method": method, "median": float(group["median"].median()),
                     "extended": float(group["extended"].median()), "worst_task": worst.task,
                     "worst": float(worst["median"]), "vs_fixed_default": ratio_to(table, method, "fixed_default")})
    totals = pd.DataFrame(rows)
    if summary is not None and not totals.empty:
        totals = totals.merge(bootstrap_intervals(summary), on="method", how="left")
    return totals


def rank_among_untuned(totals: pd.DataFrame, method: str = "lhopt") -> tuple[int, int] | None:
    """`method`'s place among itself and the UNTUNED choices present in `totals` (overall's table),
    by median over tasks: (rank, of how many), 1 the highest; ties share the better place. None
    if `method` is absent."""
    present = totals[totals.method.isin([method, *UNTUNED])].set_index("method")["median"]
    if method not in present:
        return None
    return int((present > present[method]).sum()) + 1, len(present)


def comparators_beaten(table: pd.DataFrame, method: str = "lhopt") -> pd.Series:
    """Per task (index): how many of the UNTUNED choices present `method`'s median over seeds is
    above (per_task's table). Empty if `method` is absent."""
    by = table.pivot_table(index="task", columns="method", values="median")
    others = [m for m in UNTUNED if m in by and m != method]
    if method not in by:
        return pd.Series(dtype=int)
    return (by[others].lt(by[method], axis=0)).sum(axis=1).astype(int).rename("beaten")
