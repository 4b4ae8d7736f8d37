"""Wall time of one default one-epoch AdamW run per task (lr 1e-3, cosine), in this process.

    python scripts/bench/time_tasks.py [task ...] [--max-steps N]
"""
from __future__ import annotations

import argparse
import sys
import time

from lhopt_cli.config.compose import compose
from lhopt_cli.inner import HParams, ScheduleHook, train_one_epoch
from lhopt_cli.tasks import TASKS, build_task


def main(names: list[str], max_steps: int | None = None) -> None:
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        sys.exit(f"error: unknown task '{unknown[0]}'; known: {', '.join(sorted(TASKS))}")
    print(f"{'task':<14}{'steps':>7}{'N':>10}{'build s':>9}{'epoch s':>9}{'valid loss':>20}")
    for name in names or sorted(TASKS):
        cfg = compose("baseline_grid", [f"task={name}", *([f"task.max_steps={max_steps}"] if max_steps else [])])
        start = time.perf_counter()
        task = build_task(cfg.task)
        built = time.perf_counter() - start
        result = train_one_epoch(task, 0, ScheduleHook("cosine", HParams(lr=1e-3)), HParams(lr=1e-3))
        first, last = result.curve[0]["valid_loss"], result.final_valid_loss
        print(f"{name:<14}{task.total_steps:>7}{task.num_params:>10}{built:>9.2f}{result.wall_s:>9.2f}"
              f"{first:>10.3f} -> {last:<7.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="*", help="task kinds (default: every one)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap each run at this many steps (a smoke run)")
    args = parser.parse_args()
    main(args.tasks, args.max_steps)
