"""Scale invariance of a policy: its speedup when every weight is trained as w = s * w'.

    python scripts/policy/scale_check.py [POLICY] [--suite validation_heldout] [--scales 0.01 1 100] [--seeds 0 1 2] [--markdown]

Each member of the suite runs under the policy with `task.param_scale` s (tasks/rescale.py): the
network computes the same function, but AdamW's best learning rate moves by exactly 1/s. Every
run is scored against the member's stored s = 1 grid: a run at s with lr / s follows the s = 1
run at lr, so a policy that finds the step size from unitless features scores at every s what
it scores at s = 1. Prints the speedup per member and s, the median per s and its ratio to the
median at s = 1 (issue goal: at least 0.8 at s = 0.01 and at s = 100). The test suite is refused.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from lhopt_cli.config.compose import ConfigError
from lhopt_cli.commands.validation import policy_and_suite

BUNDLED = Path(__file__).resolve().parents[2] / "src" / "lhopt_cli" / "policies" / "default.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", nargs="?", type=Path, default=BUNDLED, help="a policy file (default: the bundled one)")
    parser.add_argument("--suite", default="validation_heldout", help="a validation suite (conf/suite/ name)")
    parser.add_argument("--scales", nargs="+", type=float, default=[0.01, 1.0, 100.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--grid-dir", type=Path, default=Path("outputs/scale-check/grids"),
                        help="where s = 1 grid runs the stored grids lack are computed")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    bad = [s for s in args.scales if not (0 < s < float("inf"))]
    if bad:
        sys.exit(f"error: --scales must be finite positive numbers (got {bad[0]})")
    if len(set(args.scales)) < len(args.scales):
        sys.exit("error: --scales lists a scale more than once")
    if 1.0 not in args.scales:
        args.scales = [1.0, *args.scales]  # the yardstick
    try:
        agent, protocol, suite = policy_and_suite(args.policy, args.suite, args.seeds, args.grid_dir)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    members = list(suite.members)
    scores: dict[float, dict[str, float]] = {}
    for scale in args.scales:
        # the same members and s = 1 grids, each task trained through w = s * w'
        suite.members = [replace(m, task_cfg={**m.task_cfg, "param_scale": scale}) for m in members]
        scores[scale] = suite.score(agent)[1]
    medians = {scale: float(np.median(list(per.values()))) for scale, per in scores.items()}
    ids = [m.id for m in members]
    if args.markdown:
        print("| s | median | vs s = 1 | " + " | ".join(ids) + " |")
        print("|---|---|---|" + "---|" * len(ids))
    for scale in args.scales:
        ratio = medians[scale] / medians[1.0] if medians[1.0] > 0 else float("nan")
        if args.markdown:
            print(f"| {scale:g} | {medians[scale]:.3f}x | {ratio:.2f} | "
                  + " | ".join(f"{scores[scale][i]:.2f}" for i in ids) + " |")
        else:
            print(f"s = {scale:<8g} median {medians[scale]:.3f}x  ({ratio:.2f} of s = 1)")
    worst = min(medians[s] / medians[1.0] if medians[1.0] > 0 else float("nan") for s in args.scales)
    print(f"lowest median against s = 1: {worst:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
