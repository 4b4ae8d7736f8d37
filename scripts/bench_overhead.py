"""Overhead of the Controller in a plain training loop, measured in one run.

    python scripts/bench_overhead.py [--tasks mlp_mnist char_lm] [--repeats 3] [--policy PATH]

For each task: the wall time of one epoch with torch's AdamW alone, and of the same epoch
with the Controller attached (clipping every step, statistics every 4th, 64 decisions),
alternated `repeats` times; prints the ratio of the medians (goal: at most 1.05).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from lhopt_cli import Controller
from lhopt_cli.config import compose
from lhopt_cli.tasks import build_task


def one_epoch(task, controller: Controller | None) -> float:
    model = task.make_model(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if controller is not None:
        controller.attach(opt, total_steps=task.total_steps, model=model)
    start = time.perf_counter()
    for _, batch in zip(range(task.total_steps), task.train_batches(0)):
        loss = task.loss(model, batch)
        loss.backward()
        if controller is not None:
            controller.step(loss=loss.item())
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["mlp_mnist", "char_lm"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--policy", default=None, help="policy file (default: the bundled policy)")
    args = parser.parse_args()
    for name in args.tasks:
        task = build_task(compose("baseline_grid", [f"task={name}"]).task)
        one_epoch(task, None)  # warm-up
        plain, controlled = [], []
        for _ in range(args.repeats):
            plain.append(one_epoch(task, None))
            controlled.append(one_epoch(task, Controller.from_pretrained(args.policy)))
        a, b = statistics.median(plain), statistics.median(controlled)
        print(f"{name}: plain AdamW {a:.2f} s, with Controller {b:.2f} s per epoch "
              f"({task.total_steps} steps): overhead ratio {b / a:.3f}")


if __name__ == "__main__":
    main()
