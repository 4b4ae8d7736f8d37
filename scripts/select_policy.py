"""Score policy files on validation suites and name the one to keep: checkpoint selection across runs.

    python scripts/select_policy.py POLICY [POLICY ...] [--suites validation validation_extended] [--markdown]

Every policy runs greedily, with the divergence guard, on every member of the suites (seed 0, as
`train-policy` validates), scored as `lhopt evaluate` scores it: the speedup over the best of the
member's 35 stored AdamW runs (benchmarks/grids/<suite>/; missing runs are computed into --grid-dir).
The score is the median over all members of all suites; the best score is named last. The files
may differ in their lr decay only (scripts/set_lr_decay.py): each runs under its own. The test
suite is refused: nothing is chosen on it.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console

from lhopt_cli.config import ConfigError
from lhopt_cli.control.checkpoint import PolicyFileError, load_policy, policy_protocol
from lhopt_cli.validation import ValidationSuite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policies", nargs="+", type=Path, help="policy files (a run's best.pt, policy.pt, a bundle)")
    parser.add_argument("--suites", nargs="+", default=["validation"], help="conf/suite/ names (default: validation)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--grid-dir", type=Path, default=Path("outputs/select-policy/grids"),
                        help="where grid runs the stored grids lack are computed")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
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
    best = max(medians, key=medians.get)
    print(f"best: {best} (median {medians[best]:.3f}x on {', '.join(args.suites)})")


if __name__ == "__main__":
    main()
