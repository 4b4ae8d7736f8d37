"""Overhead of the Controller in a plain training loop, measured in one run.

    python scripts/bench/bench_overhead.py [--tasks mlp_mnist char_lm] [--repeats 3] [--policy PATH]

For each task: the wall time of one epoch with torch's AdamW alone, clipping the gradient norm
every step (torch.nn.utils.clip_grad_norm_), and of the same epoch with the Controller attached
(which clips every step itself, samples statistics every 4th step and decides at the policy's
decision points; the divergence guard keeps a copy at each decision), alternated `repeats`
times; prints the ratio of the medians. Neither loop reads the loss on the host: the Controller
gets it as a tensor. Goals: at most 1.05 on char_lm, at most 1.25 on mlp_mnist.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from lhopt_cli import Controller, ControllerMisuseWarning
from lhopt_cli.config.compose import compose
from lhopt_cli.tasks import build_task


def one_epoch(task, controller: Controller | None, max_norm: float = 1.0) -> float:
    # neither loop validates (the same work on both sides): the Controller's note that the policy
    # expects validation losses is not this measurement's concern
    warnings.simplefilter("ignore", ControllerMisuseWarning)
    model = task.make_model(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if controller is not None:
        controller.attach(opt, total_steps=task.total_steps, model=model)
    start = time.perf_counter()
    for _, batch in zip(range(task.total_steps), task.train_batches(0)):
        loss = task.loss(model, batch)
        loss.backward()
        if controller is None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            opt.step()
        elif controller.step(loss=loss.detach()):
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
        decisions = len(Controller.from_pretrained(args.policy).attach(
            torch.optim.AdamW(task.make_model(0).parameters()), total_steps=task.total_steps).boundaries)
        added_ms = 1000 * (b - a) / task.total_steps
        print(f"{name}: plain AdamW {a:.2f} s, with Controller {b:.2f} s per epoch "
              f"({task.total_steps} steps, {decisions} decisions; {added_ms:.2f} ms added per step): "
              f"overhead ratio {b / a:.3f}")


if __name__ == "__main__":
    main()
