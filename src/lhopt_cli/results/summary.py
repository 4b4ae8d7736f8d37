"""Speedups summed up over a suite: per task over seeds, then per method over tasks.

`summary` is the table `lhopt evaluate` writes (summary.csv: one row per task, seed and method,
columns speedup, speedup_extended, best_at_edge, final_valid_loss).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

METHOD_ORDER = ("lhopt", "replay", "fixed_default", "adamw_default", "prodigy", "schedulefree", "oracle")


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


def overall(table: pd.DataFrame) -> pd.DataFrame:
    """Per method other than the best of 35 (lhopt, the untuned choices, the other optimizers, the
    oracle, in that order): the median over tasks of the per-task medians against the best of 35
    and against the extended grid, the worst task, and the median ratio to fixed_default."""
    rows = []
    compared = table[table.method != "best_baseline"]
    for method in _ordered(compared.method):
        group = compared[compared.method == method]
        worst = group.loc[group["median"].idxmin()]
        rows.append({"method": method, "median": float(group["median"].median()),
                     "extended": float(group["extended"].median()), "worst_task": worst.task,
                     "worst": float(worst["median"]), "vs_fixed_default": ratio_to(table, method, "fixed_default")})
    return pd.DataFrame(rows)
