"""Wall time of one default one-epoch AdamW run per task (lr 1e-3, cosine), in this process.

    python scripts/bench/time_tasks.py [task ...]
"""
from __future__ import annotations

import sys
import time

from lhopt_cli.config.compose import compose
from lhopt_cli.inner import HParams, ScheduleHook, train_one_epoch
from lhopt_cli.tasks import TASKS, build_task


def main(names: list[str]) -> None:
    print(f"{'task':<14}{'steps':>7}{'N':>10}{'build s':>9}{'epoch s':>9}{'valid loss':>20}")
    for name in names or sorted(TASKS):
        cfg = compose("baseline_grid", [f"task={name}"])
        start = time.perf_counter()
        task = build_task(cfg.task)
        built = time.perf_counter() - start
        result = train_one_epoch(task, 0, ScheduleHook("cosine", HParams(lr=1e-3)), HParams(lr=1e-3))
        first, last = result.curve[0]["valid_loss"], result.final_valid_loss
        print(f"{name:<14}{task.total_steps:>7}{task.num_params:>10}{built:>9.2f}{result.wall_s:>9.2f}"
              f"{first:>10.3f} -> {last:<7.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
