"""Score policy files on validation suites and name the one to keep: checkpoint selection across runs.

    python scripts/policy/select_policy.py POLICY [POLICY ...] [--suites validation validation_extended] [--markdown]
    python scripts/policy/select_policy.py RUN/passes/iteration_*_raw.pt --neighbours --suites validation_heldout validation --seeds 0 1 2
    python scripts/policy/select_policy.py A.pt B.pt --spread 0.05 --suites validation_heldout validation --seeds 0 1 2

Every policy runs greedily, with the divergence guard, on every member of the suites (seed 0, as
`train-policy` validates), scored as `lhopt evaluate` scores it: the speedup over the best of the
member's 35 stored AdamW runs (benchmarks/grids/<suite>/; missing runs are computed into --grid-dir).
The score is the median over all members of all suites; the best score is named last. The files
may differ in their lr decay only (scripts/policy/set_lr_decay.py): each runs under its own. The test
suite is refused: nothing is chosen on it.

Noise: --neighbours reads the files as neighbouring validation passes of one run (in the order
given, e.g. the files `validation.keep=true` keeps in RUN/passes/) and prints the pass-to-pass
spread, the median absolute difference between neighbouring passes' scores: how far the
instrument moves between policies that differ by a few PPO iterations. --spread S (such a spread)
says whether the best is ahead of the next by more than S: a with/without counts as a gain only
then. --out CSV keeps every score (policy, suite, member, speedup).

Measuring a part of the controller: --stall-rule runs the divergence guard under another stall
rule (inner/guard.py: runaway, start, off); --hold-beta1 keeps beta1 where it starts (0.9), the
policy's beta1 head held at its no-op.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from lhopt_cli.config.compose import ConfigError
from lhopt_cli.control.actions import HEAD_NAMES, NO_OP
from lhopt_cli.inner import guard
from lhopt_cli.control.checkpoint import PolicyFileError, load_policy, policy_protocol
from lhopt_cli.commands.validation import ValidationSuite


class HeldHead:
    """A policy whose `head` always takes its no-op choice (the others as the policy picks)."""

    def __init__(self, agent, head: str):
        self.agent, self.column = agent, HEAD_NAMES.index(head)

    def initial_state(self, batch: int):
        return self.agent.initial_state(batch)

    def act(self, *args, **kwargs):
        action, state = self.agent.act(*args, **kwargs)
        action = action.clone()
        action[:, self.column] = NO_OP[self.column]
        return action, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policies", nargs="+", type=Path, help="policy files (a run's best.pt, policy.pt, a bundle)")
    parser.add_argument("--suites", nargs="+", default=["validation"], help="conf/suite/ names (default: validation)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--grid-dir", type=Path, default=Path("outputs/select-policy/grids"),
                        help="where grid runs the stored grids lack are computed")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--neighbours", action="store_true",
                        help="the files are neighbouring passes of one run, in order: print the pass-to-pass spread")
    parser.add_argument("--spread", type=float, default=None,
                        help="a pass-to-pass spread: say whether the best is ahead of the next by more")
    parser.add_argument("--out", type=Path, default=None, help="write every score to this CSV")
    parser.add_argument("--stall-rule", choices=guard.STALL_RULES, default=guard.STALL_RULE,
                        help=f"the guard's stall rule (default {guard.STALL_RULE})")
    parser.add_argument("--hold-beta1", action="store_true", help="beta1 held at its start: the beta1 head's no-op")
    args = parser.parse_args()
    guard.STALL_RULE = args.stall_rule
    if args.neighbours and len(args.policies) < 2:
        sys.exit("error: --neighbours needs at least two passes")
    if args.spread is not None and not (args.spread >= 0 and np.isfinite(args.spread)):
        sys.exit(f"error: --spread must be a finite number >= 0 (got {args.spread})")
    quiet = Console(quiet=True)
    try:
        loaded = [(path, *load_policy(path)) for path in args.policies]
        decays = [policy_protocol(meta).lr_decay for _, _, meta in loaded]
        # the suites are built for one protocol; only the lr decay may differ between the files
        protocols = {replace(policy_protocol(meta), lr_decay="constant") for _, _, meta in loaded}
        if len(protocols) > 1:
            raise ConfigError("the policies were trained under different observation protocols; score them separately")
        protocol = protocols.pop()
        suites = [ValidationSuite(name, args.seeds, protocol, args.grid_dir / name, console=quiet) for name in args.suites]
    except (PolicyFileError, ConfigError) as error:
        sys.exit(f"error: {error}")
    except OSError as error:  # e.g. --grid-dir a file
        sys.exit(f"error: --grid-dir {args.grid_dir}: {error.strerror or error}")
    scores = {}
    for (path, agent, _), decay in zip(loaded, decays):
        if args.hold_beta1:
            agent = HeldHead(agent, "one_minus_beta1")
        per_member = {}
        for name, suite in zip(args.suites, suites):
            per_member.update({f"{name}/{member}": value
                               for member, value in suite.score(agent, lr_decay=decay)[1].items()})
        scores[path] = per_member
    members = list(next(iter(scores.values())))
    medians = {path: float(np.median(list(per_member.values()))) for path, per_member in scores.items()}
    if args.markdown:
        shown = members if len(args.suites) > 1 else [m.split("/", 1)[1] for m in members]
        print("| policy | median | " + " | ".join(shown) + " |")
        print("|---|---|" + "---|" * len(members))
    for path, per_member in scores.items():
        if args.markdown:
            print(f"| {path} | {medians[path]:.3f}x | " + " | ".join(f"{per_member[m]:.2f}" for m in members) + " |")
        else:
            print(f"{str(path):60s} median {medians[path]:.3f}x over {len(members)} members")
    if len(args.suites) > 1:  # each suite's own median beside the pooled one
        for path, per_member in scores.items():
            shown = ", ".join(f"{name} {np.median([v for m, v in per_member.items() if m.startswith(name + '/')]):.3f}x"
                              for name in args.suites)
            print(f"{str(path):60s} {shown}")
    if args.out is not None:
        rows = [{"policy": str(path), "suite": member.split("/", 1)[0], "member": member.split("/", 1)[1],
                 "speedup": value, "seeds": " ".join(map(str, args.seeds))}
                for path, per_member in scores.items() for member, value in per_member.items()]
        pd.DataFrame(rows).to_csv(args.out, index=False)
    if args.neighbours:
        ordered = [medians[path] for path in args.policies]
        steps = np.abs(np.diff(ordered))
        print(f"pass-to-pass spread: {np.median(steps):.3f} (median |difference| of {len(steps)} neighbouring "
              f"pairs; largest {steps.max():.3f})")
    best = max(medians, key=medians.get)
    print(f"best: {best} (median {medians[best]:.3f}x on {', '.join(args.suites)})")
    if args.spread is not None and len(medians) > 1:
        runner_up = max((p for p in medians if p != best), key=medians.get)
        gap = medians[best] - medians[runner_up]
        verdict = "above the spread: a gain" if gap > args.spread else "within the spread: not a gain"
        print(f"ahead of {runner_up} by {gap:.3f} ({verdict} of {args.spread:.3f})")


if __name__ == "__main__":
    main()
