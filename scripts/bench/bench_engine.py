"""Throughput of the batched engine against one-at-a-time runs, measured in one run.

    python scripts/bench/bench_engine.py [--steps 40] [--tasks mlp_mnist cnn_mnist char_lm] [--ks 1 8 32 64]
    python scripts/bench/bench_engine.py --grid mlp_mnist     # the full default grid, chosen path vs one at a time

Prints run-steps per second (member-steps for the engine) and the ratio to one run at a time
with fused AdamW in one process (torch's default threads), one line per task and K, then the
same runs split over two one-thread worker processes.
"""
from __future__ import annotations

import argparse
import time

import torch

from lhopt_cli.config.compose import compose
from lhopt_cli.support.executor import run_jobs
from lhopt_cli.inner import HParams, ScheduleHook, train_one_epoch
from lhopt_cli.inner.batched import train_batched
from lhopt_cli.tasks import build_task


def _task(name: str, steps: int):
    # validation only at the start and the end, so the timing is of training steps
    return build_task(compose("baseline_grid", [f"task={name}", f"task.max_steps={steps}", "task.eval_points=1"]).task)


def single_rate(name: str, steps: int, runs: int) -> float:
    task = _task(name, steps)
    train_one_epoch(task, 0, hparams=HParams())  # warm-up
    start = time.perf_counter()
    for seed in range(runs):
        train_one_epoch(task, seed, ScheduleHook("cosine", HParams()), HParams())
    return runs * steps / (time.perf_counter() - start)


def batched_rate(name: str, steps: int, k: int) -> float:
    task = _task(name, steps)
    train_batched(task, list(range(k)))  # warm-up
    start = time.perf_counter()
    train_batched(task, list(range(k)), [ScheduleHook("cosine", HParams()) for _ in range(k)])
    return k * steps / (time.perf_counter() - start)


def _worker_rate(args: tuple) -> float:
    kind, name, steps, count = args
    return single_rate(name, steps, count) if kind == "single" else batched_rate(name, steps, count)


def two_process_rate(kind: str, name: str, steps: int, count: int) -> float:
    """Two one-thread workers side by side, each timing its own runs after its warm-up."""
    return sum(rate for _, rate in run_jobs(_worker_rate, [(kind, name, steps, count)] * 2, workers=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--tasks", nargs="+", default=["mlp_mnist", "cnn_mnist", "char_lm"])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--runs", type=int, default=8, help="one-at-a-time runs timed per task")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps per run")
    for name in args.tasks:
        base = single_rate(name, args.steps, args.runs)
        print(f"{name} one-at-a-time (fused AdamW, 1 process)   {base:9.1f} run-steps/s   1.00x")
        two = two_process_rate("single", name, args.steps, args.runs // 2)
        print(f"{name} one-at-a-time x 2 processes (1 thread)   {two:9.1f} run-steps/s   {two / base:.2f}x")
        for k in args.ks:
            rate = batched_rate(name, args.steps, k)
            print(f"{name} K={k:<3d} batched engine (1 process)        {rate:9.1f} run-steps/s   {rate / base:.2f}x")
            if k >= 2:
                both = two_process_rate("batched", name, args.steps, k // 2)
                print(f"{name} K={k:<3d} as 2 processes x K/2 members      {both:9.1f} run-steps/s   {both / base:.2f}x")




def grid_seconds(name: str, overrides: list[str]) -> tuple[float, str]:
    """Wall time of the whole default grid through baseline_grid.run, in a fresh folder."""
    import io
    import tempfile
    from pathlib import Path

    from rich.console import Console

    from lhopt_cli.commands import baseline_grid

    cfg = compose("baseline_grid", [f"task={name}", *overrides])
    baseline_grid.cached_task(baseline_grid.plan(cfg).jobs[0].task_json)  # data loaded before timing, for both
    log = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        baseline_grid.run(baseline_grid.plan(cfg), Path(tmp), Console(file=log, width=200))
        seconds = time.perf_counter() - start
    chosen = next((line for line in log.getvalue().splitlines() if " runs on " in line), "")
    return seconds, chosen


def grid_main() -> None:
    parser = argparse.ArgumentParser(description="the full default grid: chosen path vs one run at a time")
    parser.add_argument("--grid", nargs="+", required=True, help="tasks whose full default grid is timed")
    args, _ = parser.parse_known_args()
    for name in args.grid:
        grid_seconds(name, ["executor.workers=1", "executor.path=single", "grid.lrs=[1e-3]"])  # warm-up, untimed
        alone, _ = grid_seconds(name, ["executor.workers=1", "executor.path=single"])
        two, _ = grid_seconds(name, ["executor.workers=2", "executor.path=single"])
        first, how = grid_seconds(name, [])  # may include the one-time measurement of the paths
        chosen, _ = grid_seconds(name, [])
        print(f"{name} full grid: one at a time in one process {alone:.1f} s, in two processes {two:.1f} s; "
              f"chosen path {chosen:.1f} s ({first:.1f} s the first time) ({how.strip()}): "
              f"{alone / chosen:.2f}x over one process, {min(alone, two) / chosen:.2f}x over the better of one or two")


if __name__ == "__main__":
    import sys

    grid_main() if "--grid" in sys.argv else main()
