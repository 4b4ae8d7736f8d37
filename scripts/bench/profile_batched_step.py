"""Profile batched-engine steps (torch.profiler), top operators by CPU time.

    python scripts/bench/profile_batched_step.py [task] [K] [--steps N]
"""
from __future__ import annotations

import argparse

from torch.profiler import ProfilerActivity, profile

from lhopt_cli.config.compose import compose
from lhopt_cli.inner.batched import train_batched
from lhopt_cli.tasks import build_task


def main(name: str = "mlp_mnist", k: int = 32, steps: int = 10) -> None:
    task = build_task(compose("baseline_grid", [f"task={name}", f"task.max_steps={steps}", "task.eval_points=1"]).task)
    seeds = list(range(k))
    train_batched(task, seeds)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_batched(task, seeds)
    print(f"{name} K={k}: {steps} batched steps (plus validation at start and end)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", nargs="?", default="mlp_mnist", help="a task kind (conf/task/)")
    parser.add_argument("k", nargs="?", type=int, default=32, help="members batched together")
    parser.add_argument("--steps", type=int, default=10, help="batched steps profiled")
    args = parser.parse_args()
    main(args.task, args.k, args.steps)
