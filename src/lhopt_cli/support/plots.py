"""matplotlib figures (written to files; no display needed)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from lhopt_cli.support.files import atomic_write  # noqa: E402
import pandas as pd  # noqa: E402


def _save(fig, path: Path) -> Path:
    """Write the figure through a temporary file and a rename (a symlink at `path` is replaced,
    not written through; a failed write leaves no temporary file)."""
    try:
        fig.tight_layout()
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    finally:
        plt.close(fig)


def grid_heatmap(table: pd.DataFrame, title: str, path: Path) -> Path:
    """Final validation loss per (learning rate, schedule); the best cell boxed, gaps marked."""
    values = table.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(table.columns) + 2, 0.6 * len(table.index) + 1.8))
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="lightgray")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(table.index)), [f"{lr:g}" for lr in table.index])
    ax.set_xlabel("schedule")
    ax.set_ylabel("learning rate")
    best = np.unravel_index(np.nanargmin(values), values.shape) if np.isfinite(values).any() else None
    for (i, j), value in np.ndenumerate(values):
        label = f"{value:.3f}" if math.isfinite(value) else "div"
        red, green, blue, _ = cmap(image.norm(value)) if math.isfinite(value) else (1, 1, 1, 1)
        light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5  # dark text on light cells
        ax.text(j, i, label, ha="center", va="center", fontsize=8, color="black" if light else "white",
                fontweight="bold" if (i, j) == best else "normal")
    if best is not None:
        ax.add_patch(plt.Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    fig.colorbar(image, ax=ax, label="final validation loss")
    ax.set_title(title)
    return _save(fig, path)


VIEW_ABOVE_START = 5.0  # the curves figure's y-axis reaches at most this many times the starting loss


def learning_curve_plot(task: str, grid_curves: pd.DataFrame, ours: pd.DataFrame, path: Path,
                        paper_lrs: list[float] | None = None) -> Path:
    """Validation loss (EMA-smoothed) of the policy, the extra baselines, the best baseline and
    the baseline envelope, for the first seed (the paper's Figure 3). With `paper_lrs`, the
    envelope and the best baseline are the paper grid's (those learning rates), as the tables
    compute them: the same best run, the same target. A dotted line marks the target loss (the
    envelope's final value, docs/method.md section 8) and a dot where each method first reaches
    it; the y-axis holds every method's curve up to VIEW_ABOVE_START x the starting loss, so a
    stalled run stays in view and a blow-up does not flatten the others."""
    from lhopt_cli.results.speedup import best_curve, ema, envelope, first_step_reaching, padded

    seed = int(sorted(grid_curves.seed.unique())[0])
    grid = grid_curves[grid_curves.seed == seed]
    if paper_lrs is not None:
        grid = grid[np.isclose(grid.lr0.to_numpy(float)[:, None], np.asarray(paper_lrs, float)[None]).any(1)]
    curves = {rid: g.sort_values("step") for rid, g in grid.groupby("run_id")}
    steps = max(curves.values(), key=len).step.to_numpy()
    smoothed = {rid: ema(padded(c.valid_loss, len(steps))) for rid, c in curves.items()}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    env = envelope(list(smoothed.values()))
    target = float(env[-1])
    ax.plot(steps, env, color="gray", lw=4, alpha=0.4, label="baseline envelope")
    b = best_curve(curves, steps)
    ax.plot(steps, smoothed[b.run_id.iloc[0]], "--", color="black",
            label=f"best baseline (lr {b.lr0.iloc[0]:g}, {b.schedule.iloc[0]})")
    shown = [env[np.isfinite(env)]]
    for method, g in ours[ours.seed == seed].groupby("method"):
        g = g.sort_values("step")
        curve = ema(g.valid_loss.to_numpy(float))
        line, = ax.plot(g.step, curve, lw=2 if method == "lhopt" else 1.2, label=method)
        shown.append(curve[np.isfinite(curve)])
        reached = first_step_reaching(g.step.to_numpy(float), curve, target)
        if reached is not None:
            ax.plot([reached], [target], "o", color=line.get_color(), ms=6, zorder=4)
    if np.isfinite(target):
        ax.axhline(target, color="gray", lw=0.8, ls=":", label=f"target: the envelope's final loss {target:.4g}")
    finite = np.concatenate([v[np.isfinite(v)] for v in smoothed.values()])
    ours_finite = np.concatenate(shown)
    if finite.size:
        # a stalled run stays in view; a blow-up (a range test's sweep, say) leaves the top rather
        # than flattening every other curve: the axis reaches at most VIEW_ABOVE_START x the start
        start = float(np.nanmax([v[0] for v in smoothed.values()]))
        ours_top = ours_finite.max() if ours_finite.size else -np.inf
        if np.isfinite(start) and start > 0:
            ours_top = min(ours_top, VIEW_ABOVE_START * start)
        top = max(np.percentile(finite, 90), ours_top)
        low = min(finite.min(), ours_finite.min() if ours_finite.size else np.inf)
        ax.set_ylim(low * 0.95 if low > 0 else low - 0.05 * abs(low), top * 1.02 if top > 0 else top + 0.05 * abs(top))
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (EMA)")
    ax.set_title(f"{task}, seed {seed}: one epoch\n(dots: where each method first reaches the target)", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def hyperparameter_plot(task: str, decision_files: list[Path], path: Path, lr_decay: str = "constant",
                        total_steps: int | None = None) -> Path:
    """The hyperparameters the policy chose over the run (one line per seed); restarts marked.
    Under an lr decay (`lr_decay`, over `total_steps`), the lr panel also shows, dashed, the lr
    each step used: the policy's times the decay."""
    from lhopt_cli.inner.schedules import lr_multiplier

    panels = [("lr", "learning rate", True), ("beta1", "1 - beta1", True), ("beta2", "1 - beta2", True),
              ("eps", "eps", True), ("weight_decay", "weight decay", True), ("clip", "clip fraction", False)]
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.5), sharex=True)
    for file in decision_files:
        log = pd.read_csv(file)
        label = file.stem.rsplit("_", 1)[-1]
        for ax, (column, title, logscale) in zip(axes.flat, panels):
            values = 1 - log[column] if column in ("beta1", "beta2") else log[column]
            line, = ax.plot(log.step, values, drawstyle="steps-post", label=label)
            if column == "lr" and lr_decay != "constant" and total_steps:
                step = np.arange(total_steps)
                chosen = log.lr.to_numpy(float)[np.clip(np.searchsorted(log.step.to_numpy(), step, side="right") - 1,
                                                        0, len(log) - 1)]
                used = chosen * np.array([lr_multiplier(lr_decay, int(k), total_steps) for k in step])
                ax.plot(step, used, ls="--", lw=0.9, color=line.get_color())
            for kind, marker in (("save", "^"), ("load", "v")):
                marks = log[log.restart == kind]
                shown = 1 - marks[column] if column in ("beta1", "beta2") else marks[column]
                ax.scatter(marks.step, shown, marker=marker, color=line.get_color(), s=30, zorder=3)
            ax.set_title(title, fontsize=9)
    for ax, (_, _, logscale) in zip(axes.flat, panels):
        if logscale:
            shown = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.get_lines()])
            shown = shown[np.isfinite(shown) & (shown > 0)]
            if shown.size and shown.max() <= shown.min() * 1.0001:  # never moved: a decade around it
                ax.set_ylim(shown.min() / 3, shown.max() * 3)
            ax.set_yscale("log")
    axes.flat[0].legend(fontsize=7, title="seed", title_fontsize=7)
    if lr_decay != "constant" and total_steps:
        axes.flat[0].set_title(f"learning rate (solid: the policy's; dashed: used, x {lr_decay} decay)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.suptitle(f"{task}: hyperparameters chosen by the policy\n"
                 "markers: ^ the policy saved a checkpoint, v it restarted the run from one", fontsize=10)
    return _save(fig, path)


def scaling_plot(data: pd.DataFrame, fronts: dict, fits: dict, target: float | None, path: Path) -> Path:
    """Loss against compute per method: all points, the frontier, the fitted line and its
    extrapolation to the target compute (the paper's Figure 2)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    high = max(data.compute.max(), target or 0)
    for (method, group), color in zip(data.groupby("method"), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        ax.scatter(group.compute, group.loss, s=4, alpha=0.25, color=color)
        front = fronts[method]
        ax.scatter(front.compute, front.loss, s=18, color=color, label=f"{method} frontier")
        fit = fits[method]
        spanned = np.logspace(np.log10(front.compute.min()), np.log10(front.compute.max()), 100)
        ax.plot(spanned, fit.loss(spanned), color=color, ls="-" if method != "baseline" else "--",
                label=f"{method}: alpha {fit.alpha:.3f}")
        if high > front.compute.max():  # beyond its points: the extrapolation, dotted
            beyond = np.logspace(np.log10(front.compute.max()), np.log10(high), 50)
            ax.plot(beyond, fit.loss(beyond), color=color, ls=":", lw=1.0)
    if target:
        ax.axvline(target, color="gray", lw=0.8, ls=":", label=f"target compute {target:.3g} FLOPs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.tick_params(which="both", labelsize=7)
    ax.set_xlabel("compute (FLOPs)")
    ax.set_ylabel("loss")
    ax.set_title("compute frontier per method: faint dots every evaluation, large dots the frontier,\n"
                 "lines the fitted L = (C_c / C)^alpha over its points (dashed: the baseline; dotted: extrapolated)",
                 fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plain_log_ticks(axis) -> None:
    """A log axis labelled with plain numbers (2, 3, 4; 0.5) instead of 2 x 10^0: loss ranges
    span less than a decade, where the default labels read as exponents."""
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain)


def scaling_curves_figure(data: pd.DataFrame, fits: dict[str, tuple[float, float]]):
    """scaling_curves_plot's figure (returned, not saved): each fitted frontier is drawn over the
    compute its own frontier points span (a fit from small models says nothing beyond them)."""
    from lhopt_cli.scaling.frontier import frontier

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    sizes = sorted(data.params.unique())
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(sizes)))
    styles = {"baseline": ":", "lhopt": "-", "replay": "--"}
    for size, color in zip(sizes, colors):
        at_size = data[data.params == size]
        for method, style in styles.items():
            runs = at_size[at_size.method == method]
            if runs.empty:
                continue
            finals = runs.sort_values("compute").groupby("run_id").loss.last()
            curve = runs[runs.run_id == finals.idxmin()].sort_values("compute")
            ax.plot(curve.compute, curve.loss, color=color, ls=style, lw=1.2,
                    label=f"N = {size:,.0f}" if method == "baseline" else None)
    for method, (alpha, log_cc) in fits.items():
        front = frontier(data[data.method == method])
        if front.empty:
            continue
        grid = np.logspace(np.log10(front.compute.min()), np.log10(front.compute.max()), 100)
        ax.plot(grid, np.exp(alpha * (log_cc - np.log(grid))), color="black", lw=1.0, ls=styles.get(method, "-."),
                alpha=0.8, label=f"frontier {method}: alpha {alpha:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel("compute (FLOPs, 6 N D)")
    ax.set_ylabel("validation loss")
    ax.set_title("dotted: best of the AdamW grid; full: lhopt live; dashed: schedule replayed;\n"
                 "black: each method's fitted frontier over the compute its frontier points span", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return fig


def scaling_curves_plot(data: pd.DataFrame, fits: dict[str, tuple[float, float]], path: Path) -> Path:
    """The paper's Figure 2 layout: validation loss against compute (FLOPs, 6 N D), one colour per
    model size: dotted the grid's best run at that size (lowest final loss), full the live policy
    (method `lhopt`), dashed a replayed schedule (method `replay`); black lines the fitted
    frontiers L = (C_c / C)^alpha, `fits` {method: (alpha, log C_c)}, dotted for `baseline`, each
    over the compute its frontier points span. The loss axis reads as plain numbers.
    `data`: load_points' table (method, params, compute, loss, run_id)."""
    return _save(scaling_curves_figure(data, fits), path)


def meta_training_plot(log: pd.DataFrame, title: str, path: Path) -> Path:
    """A meta-training run's curve from its meta_train.csv rows: the mean episode reward (log
    speedup) per PPO iteration and its rolling mean; on a second axis, the validation median
    speedup of each pass (raw weights, and Polyak-averaged weights where logged)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    reward = pd.to_numeric(log.mean_episode_reward, errors="coerce")
    ax.plot(log.iteration, reward, lw=0.5, alpha=0.4, label="per iteration")
    ax.plot(log.iteration, reward.rolling(50, min_periods=1).mean(), lw=2, label="rolling mean (50)")
    ax.set(xlabel="PPO iteration", ylabel="mean episode reward (log speedup)", title=title)
    ax.legend(loc="lower left")
    scored = log[pd.to_numeric(log.get("validation_speedup"), errors="coerce").notna()] if "validation_speedup" in log else log.iloc[:0]
    if len(scored):
        right = ax.twinx()
        right.plot(scored.iteration, scored.validation_speedup.astype(float), "o-", color="C3", label="validation speedup")
        polyak = pd.to_numeric(scored.get("validation_speedup_polyak"), errors="coerce") if "validation_speedup_polyak" in scored else None
        if polyak is not None and polyak.notna().any():
            right.plot(scored.iteration, polyak, "s--", color="C4", label="Polyak weights")
        right.set_ylabel("validation median speedup (x)", color="C3")
        right.legend(loc="lower right")
    return _save(fig, path)


def parametric_plot(data: pd.DataFrame, fits: dict, path: Path) -> Path:
    """Predicted against observed loss for the parametric fit L(N, D)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for method, group in data.groupby("method"):
        ax.scatter(group.loss, fits[method].loss(group.params, group.tokens), s=6, label=method)
    low, high = data.loss.min(), data.loss.max()
    ax.plot([low, high], [low, high], color="gray", lw=0.8)
    ax.set_xlabel("observed loss")
    ax.set_ylabel("predicted loss")
    ax.set_title("L(N, D) = E + A / N^alpha + B / D^beta")
    ax.legend(fontsize=8)
    return _save(fig, path)


def speedup_plot(table: pd.DataFrame, title: str, path: Path) -> Path:
    """Speedup per task (log scale), one colour per method: the median over seeds as a dot, the
    seeds' [min, max] as a bar; 1x (the best of the grid) as a line.

    `table`: one row per (task, method) with columns task, method, median, min, max."""
    tasks, methods = list(dict.fromkeys(table.task)), list(dict.fromkeys(table.method))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(tasks) + 2), 4.2))
    width = 0.8 / max(len(methods), 1)
    for k, method in enumerate(methods):
        rows = table[table.method == method].set_index("task").reindex(tasks)
        x = np.arange(len(tasks)) + (k - (len(methods) - 1) / 2) * width
        spread = np.vstack([rows["median"] - rows["min"], rows["max"] - rows["median"]]).clip(min=0)
        ax.errorbar(x, rows["median"], yerr=spread, fmt="o", capsize=3, label=method, color=f"C{k}")
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_yscale("log")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_ylabel("speedup over the best AdamW grid run")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    return _save(fig, path)
