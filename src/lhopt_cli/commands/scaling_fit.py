"""The scaling-fit job: frontiers, power-law fits, speedups and the parametric fit, with intervals.

Writes fits.json and fits.csv (every parameter with its 95% bootstrap interval, the speedups),
scaling_frontier.png and, where params and tokens are known, parametric_fit.png. `plan(cfg)` reads
and checks the inputs once; the job runs from the plan alone.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from lhopt_cli.config.compose import ConfigError
from lhopt_cli.support.files import atomic_write, atomic_write_text
from lhopt_cli.scaling.frontier import (FitError, bootstrap, constant_speedup, fit_power, fit_power_offset, frontier,
                               interval, slope_aware_speedup)
from lhopt_cli.scaling.inputs import load_points
from lhopt_cli.scaling.parametric import MAX_ROWS as PARAMETRIC_MAX_ROWS
from lhopt_cli.scaling.parametric import NAMES as PARAMETRIC_NAMES
from lhopt_cli.scaling.parametric import bootstrap_parametric, fit_parametric, too_many_rows


def _row(method: str, fit: str, name: str, estimate: float, draws: np.ndarray) -> dict:
    low, high = interval(draws)
    return {"method": method, "fit": fit, "parameter": name, "estimate": float(estimate), "low": low, "high": high}


@dataclass(frozen=True)
class ScalingFitPlan:
    """What `lhopt scaling-fit` fits, checked: the points read from `inputs` (columns method,
    compute, loss, and params, tokens where known), the two methods the speedups compare, the
    target (FLOPs, or a model size turned into FLOPs along the frontier), the bootstrap draws, and
    whether the parametric L(N, D) fit runs."""

    data: pd.DataFrame
    baseline: str
    method: str
    target_flops: float | None
    target_params: float | None
    bootstrap: int
    parametric: bool

    @property
    def has_target(self) -> bool:
        return self.target_flops is not None or self.target_params is not None


def plan(cfg: DictConfig, console: Console | None = None) -> ScalingFitPlan:
    """The command's pre-flight: its config read into a plan, the inputs loaded and checked
    (ConfigError, one line) before any run folder is made."""
    settings = OmegaConf.to_object(cfg)
    return ScalingFitPlan(data=load_inputs(list(settings.inputs), dict(vars(settings.columns)), settings.parametric,
                                           console),
                          baseline=settings.baseline, method=settings.method, target_flops=settings.target.flops,
                          target_params=settings.target.params, bootstrap=int(settings.bootstrap),
                          parametric=bool(settings.parametric))


def target_compute(plan: ScalingFitPlan, fronts: dict[str, pd.DataFrame]) -> float | None:
    """target.flops, or target.params turned into compute along the frontier (log C vs log N)."""
    if plan.target_flops is not None:
        return float(plan.target_flops)
    if plan.target_params is None:
        return None
    points = pd.concat(fronts.values())
    if "params" not in points.columns or points.params.nunique() < 2:
        raise FitError("target.params needs a params column with at least 2 model sizes")
    slope, intercept = np.polyfit(np.log(points.params), np.log(points.compute), 1)
    return float(math.exp(intercept + slope * math.log(float(plan.target_params))))


def method_frontiers(data: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each method's compute frontier (scaling/frontier.py); FitError for one with fewer than the
    3 points a fit needs."""
    fronts = {m: frontier(g) for m, g in data.groupby("method")}
    for method, front in fronts.items():
        if len(front) < 3:
            raise FitError(f"method '{method}': {len(front)} frontier points; at least 3 are needed")
    return fronts


def load_inputs(inputs: list[str], columns: dict[str, str | None], parametric: bool,
                console: Console | None = None) -> pd.DataFrame:
    """The fit's points from `inputs` (run folders, .csv or .parquet files) with `columns` mapping
    their names, checked (ConfigError, one line): enough frontier points per method, and no more
    rows than the parametric fit takes where it runs."""
    if not inputs:
        raise ConfigError("inputs=[...] must name at least one run folder, .csv or .parquet file")
    resolved = [Path(str(p)).expanduser().resolve() for p in inputs]
    twice = next((p for p in resolved if resolved.count(p) > 1), None)
    if twice is not None:  # its points would count twice in every fit and interval
        raise ConfigError(f"inputs lists {twice} twice; give each folder or table once")
    try:
        data = load_points([str(p) for p in inputs], columns, console)
        method_frontiers(data)
        if parametric and {"params", "tokens"} <= set(data.columns):
            sizes = data.groupby("method").size()
            if sizes.max() > PARAMETRIC_MAX_ROWS:
                raise FitError(too_many_rows(int(sizes.max()), str(sizes.idxmax())))
    except FitError as err:
        raise ConfigError(str(err)) from None
    return data


def run(plan: ScalingFitPlan, run_dir: Path, console: Console | None = None) -> list[dict]:
    """Fit and write fits.csv, fits.json and the figures into run_dir. Raises ConfigError (one
    line) for fits that fail."""
    from lhopt_cli.support.progress import progress_bar

    console = console or Console(soft_wrap=True)
    data, draws = plan.data, plan.bootstrap
    try:
        fronts = method_frontiers(data)
        parametric = plan.parametric and {"params", "tokens"} <= set(data.columns)
        paired = plan.baseline in fronts and plan.method in fronts
        if not paired:  # the fits still run; say why no speedup follows them
            console.print(f"no speedup of method={plan.method} over baseline={plan.baseline}: the inputs' methods "
                          f"are {', '.join(sorted(fronts))}")
        total = (len(fronts) * (draws + max(draws // 4, 20)) + paired * draws * (1 + plan.has_target)
                 + parametric * data.method.nunique() * draws)
        with progress_bar(console) as bar:  # the refits take minutes on large inputs: say so as they go
            job = bar.add_task("bootstrap refits", total=total)
            return _fit_all(plan, run_dir, console, fronts, parametric, lambda: bar.advance(job))
    except FitError as err:
        raise ConfigError(str(err)) from None


def _fit_all(plan: ScalingFitPlan, run_dir: Path, console: Console, fronts, parametric_on: bool,
             tick) -> list[dict]:
    """Every fit and its bootstrap (`tick()` after each draw); `parametric_on`: fit L(N, D) too."""
    data, draws = plan.data, plan.bootstrap
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
    base, other = plan.baseline, plan.method
    target = target_compute(plan, fronts)
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
    from lhopt_cli.support.plots import parametric_plot, scaling_plot

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
