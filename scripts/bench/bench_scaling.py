"""The scaling experiment of the paper's Figure 2 on a character language model: a schedule the
policy produced on the smallest model, replayed on larger ones, with compute frontiers for the
AdamW grid, the live policy and the replay, and the speedups they imply with bootstrap intervals.

    python scripts/bench/bench_scaling.py                    # 8 char_lm widths, stored in benchmarks/scaling/char_lm
    python scripts/bench/bench_scaling.py --workers 2        # grid runs in 2 processes
    python scripts/bench/bench_scaling.py --out /tmp/s --widths 8 12 16 --smoke     # a handful of steps

Per width (char_lm, 2 layers, 4 heads, one epoch on the same 400k characters of text):
`lhopt evaluate` runs the 5 x 7 AdamW grid (plus lrs 3e-2 and 1e-1 at 3 schedules), one seed, and
the policy live; the schedule the policy wrote at the smallest width (schedule_char_lm_s0.json) is
copied to <out>/schedule_smallest.json and replayed at every width (`evaluate replay=...`). Then
`lhopt scaling-fit` per method: the compute frontier, the constant speedup over the grid (shared
exponent) and the slope-aware speedup at 10x and 100x the largest run's compute, each with its 95%
bootstrap interval. Writes <out>/scaling.md (the tables) and <out>/scaling_curves.png (learning
curves per width: dotted the grid's best, full the live policy, dashed the replay; the fitted
frontiers). Every step resumes: rerunning skips the runs and fits already stored.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lhopt_cli.support.files import file_in_the_way
from lhopt_cli.support.plots import scaling_curves_plot
from lhopt_cli.results.store import load
from lhopt_cli.scaling.frontier import frontier
from lhopt_cli.scaling.inputs import load_points

WIDTHS = [12, 16, 24, 32, 48, 64, 96, 128]
METHODS = ("lhopt", "replay")
MULTIPLES = (10, 100)  # the slope-aware speedup is read at these multiples of the largest run's compute


def lhopt(args: argparse.Namespace, *command: str) -> None:
    """Runs the lhopt CLI; its own one-line error and exit code end this script."""
    print("$ lhopt " + " ".join(command), flush=True)
    code = subprocess.run([sys.executable, "-m", "lhopt_cli", *command]).returncode
    if code:
        sys.exit(code)


def evaluate(args: argparse.Namespace, width: int, replay: Path | None) -> None:
    overrides = [f"task.d_model={width}", "task.n_layer=2", "task.n_head=4", f"task.max_chars={args.max_chars}"]
    grid = (["debug=smoke", "grid.lrs=[0.001,0.01]", "grid.schedules=[constant,linear]", "extended_lrs=[]"]
            if args.smoke else ["extended_lrs=[0.03,0.1]", "extended_schedules=[constant,linear,cosine]"])
    command = ["evaluate", "tasks=[char_lm]", "seeds=[0]", "extra_baselines=[]", f"policy={args.policy}", *grid,
               f"task_overrides=[{','.join(repr(o) for o in overrides)}]", f"grid_dir={args.out / 'grid'}",
               f"run_dir={args.out / f'd{width}'}", f"executor.workers={args.workers}"]
    if replay is not None:
        command.append(f"replay={replay}")
    lhopt(args, *command)


def check_experiment(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The folder holds this experiment or none: experiment.json records what made it (widths,
    text, policy file's SHA-256, smoke), and a rerun with other settings is refused in one line,
    as is a schedule_smallest.json of another run (it would be replayed at every width)."""
    record = {"widths": args.widths, "max_chars": args.max_chars, "smoke": args.smoke,
              "policy_sha256": hashlib.sha256(Path(args.policy_path).read_bytes()).hexdigest()}
    path = args.out / "experiment.json"
    if path.exists():
        try:
            held = json.loads(path.read_text())
        except (OSError, ValueError):
            parser.error(f"--out {args.out}: experiment.json is not readable; use a new --out")
        if held != record:
            changed = ", ".join(k for k in record if held.get(k) != record[k])
            parser.error(f"--out {args.out} holds an experiment with other settings ({changed}); use a new --out")
    elif (args.out / "schedule_smallest.json").exists() or any(args.out.glob("d*")):
        parser.error(f"--out {args.out} holds runs of an unrecorded experiment; use a new --out")
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def fit(args: argparse.Namespace, method: str, multiple: int, largest: float) -> pd.DataFrame:
    """The scaling-fit of `method` against the grid with the slope-aware speedup read at
    `multiple` x the largest run's compute; reads a finished fit instead of redoing it."""
    run_dir = args.out / f"fit_{method}_{multiple}x"
    if not (run_dir / "fits.csv").exists():
        inputs = [str(args.out / "grid"), *(str(args.out / f"d{w}") for w in args.widths)]
        lhopt(args, "scaling-fit", f"inputs=[{','.join(inputs)}]", "baseline=baseline", f"method={method}",
              f"target.flops={multiple * largest:.6g}", f"bootstrap={args.bootstrap}", "parametric=false",
              f"run_dir={run_dir}")
    return pd.read_csv(run_dir / "fits.csv")


def cell(row: pd.Series) -> str:
    return f"{row.estimate:.3g}x [{row.low:.3g}, {row.high:.3g}]"


def per_width(args: argparse.Namespace) -> list[str]:
    """One row per width: parameters, the grid's best final loss and setting, each method's final
    loss and speedup over the best of the grid (evaluate's summary.csv)."""
    lines = ["| width | non-embedding params | best of grid: loss (lr, schedule) | lhopt: loss, speedup | "
             "replay: loss, speedup |", "|---|---|---|---|---|"]
    for width in args.widths:
        summary = pd.read_csv(args.out / f"d{width}" / "summary.csv")
        best = summary[summary.method == "best_baseline"].iloc[0]
        cells = []
        for method in METHODS:
            row = summary[summary.method == method]
            cells.append(f"{row.final_valid_loss.iloc[0]:.3f}, {row.speedup.iloc[0]:.2f}x" if len(row) else "-")
        lines.append(f"| {width} | {args.sizes[width]:,} | {best.final_valid_loss:.3f} ({best.best_lr:g}, "
                     f"{best.best_schedule}) | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/scaling/char_lm"))
    parser.add_argument("--widths", type=int, nargs="+", default=WIDTHS, help="char_lm d_model values (n_head 4)")
    parser.add_argument("--max-chars", type=int, default=400_000, help="characters of text (one epoch)")
    parser.add_argument("--policy", default="default")
    parser.add_argument("--workers", type=int, default=1, help="grid worker processes (0: one per core)")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="a handful of steps and a 2 x 2 grid (tests)")
    args = parser.parse_args()
    args.widths = sorted(set(args.widths))
    if len(args.widths) < 3 or any(w < 4 or w % 4 for w in args.widths):
        parser.error("--widths: at least 3 different widths, each a multiple of 4 (4 heads)")
    if args.bootstrap < 10:
        parser.error("--bootstrap: at least 10 resamples (scaling-fit's minimum)")
    if args.max_chars < 20_000:
        parser.error("--max-chars: at least 20,000 characters (one epoch of at least a few steps per width)")
    if args.workers < 0:
        parser.error("--workers: 0 (one per core) or more")
    blocker = file_in_the_way(args.out)
    if blocker is not None:
        parser.error(f"--out: {blocker} is a file, not a folder")
    from lhopt_cli.loop.controller import default_policy_path
    from lhopt_cli.control.checkpoint import PolicyFileError, load_policy

    args.policy_path = default_policy_path() if args.policy == "default" else Path(args.policy)
    try:
        load_policy(args.policy_path)
    except PolicyFileError as err:
        parser.error(f"--policy: {err}")
    check_experiment(args, parser)
    started = time.perf_counter()

    smallest = args.widths[0]
    schedule = args.out / "schedule_smallest.json"
    recorded = args.out / f"d{smallest}" / "schedule_char_lm_s0.json"
    if not schedule.exists():
        evaluate(args, smallest, None)  # the policy live at the smallest width writes its schedule
        shutil.copyfile(recorded, schedule)
    for width in args.widths:
        evaluate(args, width, schedule)

    inputs = [str(args.out / "grid"), *(str(args.out / f"d{w}") for w in args.widths)]
    data = load_points(inputs, {"params": "params", "tokens": "tokens", "flops": None, "loss": "loss",
                                "method": "method", "step": "step"})
    args.sizes = {w: int(load(args.out / f"d{w}").model_params.iloc[0]) for w in args.widths}
    largest = float(data.compute.max())
    fits = {(m, k): fit(args, m, k, largest) for m in METHODS for k in MULTIPLES}

    lines = [f"`python scripts/bench/bench_scaling.py{' --smoke' if args.smoke else ''}` ({len(args.widths)} widths, "
             f"{min(args.sizes.values()):,} to {max(args.sizes.values()):,} non-embedding parameters, "
             f"{max(args.sizes.values()) / min(args.sizes.values()):.0f}x; one seed; bootstrap {args.bootstrap})", ""]
    lines += per_width(args) + [""]
    # which runs make each frontier: a frontier drawn by a few small models only extrapolates poorly
    fronts = {m: frontier(g) for m, g in data.groupby("method")}
    lines += ["| method | frontier points (from model sizes) |", "|---|---|"]
    for method in ("baseline", *METHODS):
        sizes = ", ".join(f"{int(n):,}" for n in sorted(fronts[method].params.unique()))
        lines.append(f"| {'grid (baseline)' if method == 'baseline' else method} | {len(fronts[method])} ({sizes}) |")
    lines += ["", "| method vs the grid | frontier exponent alpha | constant speedup (shared alpha) | "
              + " | ".join(f"slope-aware at {k}x the largest compute ({k * largest:.2g} FLOPs)" for k in MULTIPLES)
              + " |", "|---|---|---|" + "---|" * len(MULTIPLES)]
    curves = {}
    for method in METHODS:
        table = fits[(method, MULTIPLES[0])]
        alpha = table[(table.method == method) & (table.fit == "L=(Cc/C)^alpha") & (table.parameter == "alpha")].iloc[0]
        base = table[(table.method == "baseline") & (table.fit == "L=(Cc/C)^alpha") & (table.parameter == "alpha")].iloc[0]
        constant = table[table.parameter == "constant_speedup"].iloc[0]
        slopes = [fits[(method, k)].query("parameter == 'slope_aware_speedup'").iloc[0] for k in MULTIPLES]
        lines.append(f"| {method} | {alpha.estimate:.3f} [{alpha.low:.3f}, {alpha.high:.3f}] (grid {base.estimate:.3f} "
                     f"[{base.low:.3f}, {base.high:.3f}]) | {cell(constant)} | " + " | ".join(cell(s) for s in slopes) + " |")
        for name in ("baseline", method):
            rows = table[(table.method == name) & (table.fit == "L=(Cc/C)^alpha")].set_index("parameter").estimate
            curves[name] = (float(rows["alpha"]), float(rows["log_Cc"]))
    text = "\n".join(lines) + "\n"
    (args.out / "scaling.md").write_text(text)
    figure = scaling_curves_plot(data, curves, args.out / "scaling_curves.png")
    print(text + f"\nfigure: {figure}\ntables: {args.out / 'scaling.md'}\n"
          f"bench_scaling: {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
