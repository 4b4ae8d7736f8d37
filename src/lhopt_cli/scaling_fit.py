"""The scaling-fit job: frontiers, power-law fits, speedups and the parametric fit, with intervals.

Writes fits.json and fits.csv (every parameter with its 95% bootstrap interval, the speedups),
scaling_frontier.png and, where params and tokens are known, parametric_fit.png.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from .config import ConfigError
from .files import atomic_write, atomic_write_text
from .scaling.frontier import (FitError, bootstrap, constant_speedup, fit_power, fit_power_offset, frontier,
                               interval, slope_aware_speedup)
from .scaling.inputs import load_points
from .scaling.parametric import MAX_ROWS as PARAMETRIC_MAX_ROWS
from .scaling.parametric import NAMES as PARAMETRIC_NAMES
from .scaling.parametric import bootstrap_parametric, fit_parametric, too_many_rows


def _row(method: str, fit: str, name: str, estimate: float, draws: np.ndarray) -> dict:
    low, high = interval(draws)
    return {"method": method, "fit": fit, "parameter": name, "estimate": float(estimate), "low": low, "high": high}


def target_compute(cfg: DictConfig, fronts: dict[str, pd.DataFrame]) -> float | None:
    """target.flops, or target.params turned into compute along the frontier (log C vs log N)."""
    if cfg.target.flops is not None:
        return float(cfg.target.flops)
    if cfg.target.params is None:
        return None
    points = pd.concat(fronts.values())
    if "params" not in points.columns or points.params.nunique() < 2:
        raise FitError("target.params needs a params column with at least 2 model sizes")
    slope, intercept = np.polyfit(np.log(points.params), np.log(points.compute), 1)
    return float(math.exp(intercept + slope * math.log(float(cfg.target.params))))


def method_frontiers(data: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each method's compute frontier (scaling/frontier.py); FitError for one with fewer than the
    3 points a fit needs."""
    fronts = {m: frontier(g) for m, g in data.groupby("method")}
    for method, front in fronts.items():
        if len(front) < 3:
            raise FitError(f"method '{method}': {len(front)} frontier points; at least 3 are needed")
    return fronts


def load_inputs(cfg: DictConfig, console: Console | None = None):
    """The fit's points from `inputs`, checked (ConfigError, one line) before any run folder is
    made: the CLI calls it first and hands the points to run()."""
    if not cfg.inputs:
        raise ConfigError("inputs=[...] must name at least one run folder, .csv or .parquet file")
    resolved = [Path(str(p)).expanduser().resolve() for p in cfg.inputs]
    twice = next((p for p in resolved if resolved.count(p) > 1), None)
    if twice is not None:  # its points would count twice in every fit and interval
        raise ConfigError(f"inputs lists {twice} twice; give each folder or table once")
    try:
        data = load_points(list(cfg.inputs), OmegaConf.to_container(cfg.columns, resolve=True), console)
        method_frontiers(data)
        if bool(cfg.parametric) and {"params", "tokens"} <= set(data.columns):
            sizes = data.groupby("method").size()
            if sizes.max() > PARAMETRIC_MAX_ROWS:
                raise FitError(too_many_rows(int(sizes.max()), str(sizes.idxmax())))
    except FitError as err:
        raise ConfigError(str(err)) from None
    return data


def run(cfg: DictConfig, run_dir: Path, console: Console | None = None, data=None) -> list[dict]:
    """Fit and write fits.csv, fits.json and the figures into run_dir; `data`: load_inputs(cfg)
    when already read. Raises ConfigError (one line) for inputs or fits that fail."""
    console = console or Console(soft_wrap=True)
    data = load_inputs(cfg, console) if data is None else data
    try:
        return _run(cfg, run_dir, console, data)
    except FitError as err:
        raise ConfigError(str(err)) from None


def _run(cfg: DictConfig, run_dir: Path, console: Console, data) -> list[dict]:
    from .progress import progress_bar

    draws = int(cfg.bootstrap)
    fronts = method_frontiers(data)
    parametric = bool(cfg.parametric) and {"params", "tokens"} <= set(data.columns)
    paired = cfg.baseline in fronts and cfg.method in fronts
    has_target = cfg.target.flops is not None or cfg.target.params is not None
    total = (len(fronts) * (draws + max(draws // 4, 20)) + paired * draws * (1 + has_target)
             + parametric * data.method.nunique() * draws)
    with progress_bar(console) as bar:  # the refits take minutes on large inputs: say so as they go
        job = bar.add_task("bootstrap refits", total=total)
        return _fit_all(cfg, run_dir, console, data, fronts, draws, parametric, lambda: bar.advance(job))


def _fit_all(cfg: DictConfig, run_dir: Path, console: Console, data, fronts, draws: int, parametric_on: bool,
             tick) -> list[dict]:
    """Every fit and its bootstrap (`tick()` after each draw); `parametric_on`: fit L(N, D) too."""
    rows, fits = [], {}
    for method, front in fronts.items():
        plain, offset = fit_power(front.compute, front.loss), fit_power_offset(front.compute, front.loss)
        fits[method] = plain
        boot_plain = bootstrap(lambda s: [(f := fit_power(s["f"].compute, s["f"].loss)).alpha, f.log_cc],
                               {"f": front}, draws, tick=tick)
        boot_offset = bootstrap(lambda s: [(f := fit_power_offset(s["f"].compute, s["f"].loss)).alpha, f.log_cc, f.e],
                                {"f": front}, max(draws // 4, 20), tick=tick)
        rows += [_row(method, "L=(Cc/C)^alpha", "alpha", plain.alpha, boot_plain[:, 0]),
                 _row(method, "L=(Cc/C)^alpha", "log_Cc", plain.log_cc, boot_plain[:, 1]),
                 _row(method, "L=E+(Cc/C)^alpha", "alpha", offset.alpha, boot_offset[:, 0]),
                 _row(method, "L=E+(Cc/C)^alpha", "log_Cc", offset.log_cc, boot_offset[:, 1]),
                 _row(method, "L=E+(Cc/C)^alpha", "E", offset.e, boot_offset[:, 2])]
    base, other = cfg.baseline, cfg.method
    target = target_compute(cfg, fronts)
    if base in fronts and other in fronts:
        pair = {base: fronts[base], other: fronts[other]}
        rows.append(_row(f"{other} vs {base}", "shared alpha", "constant_speedup", constant_speedup(pair, base, other),
                         bootstrap(lambda s: constant_speedup(s, base, other), pair, draws, tick=tick)))
        if target is not None:
            def slope_aware(s):
                return slope_aware_speedup(fit_power(s[base].compute, s[base].loss),
                                           fit_power(s[other].compute, s[other].loss), target)
            rows.append(_row(f"{other} vs {base}", f"at C={target:.3g}", "slope_aware_speedup", slope_aware(pair),
                             bootstrap(slope_aware, pair, draws, tick=tick)))
    parametric = {}
    if parametric_on:
        for method, group in data.groupby("method"):
            fit = fit_parametric(group.params, group.tokens, group.loss)
            if not fit.converged:
                raise FitError(f"method '{method}': the parametric fit did not converge")
            parametric[method] = fit
            boot = bootstrap_parametric(group.params, group.tokens, group.loss, fit, draws, tick=tick)
            for k, name in enumerate(PARAMETRIC_NAMES):
                rows.append(_row(method, "L=E+A/N^alpha+B/D^beta", name, getattr(fit, name), boot[:, k]))
            for k, (name, value) in enumerate(fit.exponents().items()):
                rows.append(_row(method, "compute-optimal N~C^a, D~C^b", name, value,
                                 boot[:, len(PARAMETRIC_NAMES) + k]))
    write_outputs(rows, run_dir, console)
    from .plots import parametric_plot, scaling_plot

    figure = scaling_plot(data, fronts, fits, target, run_dir / "scaling_frontier.png")
    console.print(f"figure: {figure}")
    if parametric:
        console.print(f"figure: {parametric_plot(data, parametric, run_dir / 'parametric_fit.png')}")
    return rows


def write_outputs(rows: list[dict], run_dir: Path, console: Console) -> None:
    table = pd.DataFrame(rows)
    atomic_write(run_dir / "fits.csv", lambda tmp: table.to_csv(tmp, index=False))
    # strict JSON: a number that is missing (NaN, inf) is null
    plain = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
    atomic_write_text(run_dir / "fits.json", json.dumps(plain, indent=2, allow_nan=False))
    shown = Table(title="scaling fits (95% bootstrap intervals)")
    for column in ("method", "fit", "parameter", "estimate", "95% interval"):
        shown.add_column(column, justify="right" if column in ("estimate", "95% interval") else "left")
    for r in rows:
        span = "" if math.isnan(r["low"]) else f"[{r['low']:.4g}, {r['high']:.4g}]"
        shown.add_row(r["method"], r["fit"], r["parameter"], f"{r['estimate']:.4g}", span)
    console.print(shown)
    console.print(f"fits: {run_dir / 'fits.csv'}, {run_dir / 'fits.json'}")
