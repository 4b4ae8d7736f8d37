"""Write conf/suite/validation.yaml: a fixed list of task instances sampled from the training family.

    python scripts/suites/make_validation_suite.py [--per-kind 2] [--seed 7000] [--out conf/suite/validation.yaml]
    python scripts/suites/make_validation_suite.py --family extended --per-kind 2 --seed 7100 --name validation_extended
    python scripts/suites/make_validation_suite.py --family heldout --per-kind 4 --seed 7200 --name validation_heldout_short --out FILE

Each kind the family (`--family`, a conf/task_family/ name) trains on gets `--per-kind` instances, drawn with the family's own
sampler from a random stream (`--seed`) that meta-training never uses, so the suite holds tasks
of the training distribution that no PPO update saw. `--family heldout` draws kinds no training
family holds (`lhopt train-policy` refuses them), so a checkpoint is chosen by kinds it never saw
(validation_heldout_short was drawn so: --name validation_heldout_short). The list is written
out in full: later changes to the family do not change the suite. The hand-composed suites (test,
test_short, validation_heldout, validation_heldout_short, train, smoke) are never overwritten.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml
from omegaconf import OmegaConf

from lhopt_cli.config.compose import ConfigError, compose
from lhopt_cli.tasks.families import TaskFamily

RUN_KEYS = ("eval_points", "max_steps", "valid_size")  # set by the protocol and by debug, not by the suite


def sample_members(per_kind: int, seed: int, family: str = "default") -> list[dict]:
    family_cfg = OmegaConf.to_container(compose("train_policy", [f"task_family={family}"]).task_family, resolve=True)
    members = []
    for kind in TaskFamily(family_cfg).names:
        one_kind = TaskFamily({**family_cfg, "kinds": {kind: family_cfg["kinds"][kind]}, "exclude": []})
        rng = np.random.default_rng([seed, len(members)])
        for k in range(per_kind):
            sampled = one_kind.sample(rng)
            params = {key: value for key, value in sampled.items() if key not in RUN_KEYS and key != "name"}
            members.append({"id": f"{kind}_{k}", "task": kind, "params": params})
    return members


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7000)
    parser.add_argument("--family", default="default", help="the conf/task_family/ the members are drawn from")
    parser.add_argument("--name", default="validation", help="the suite's name (and file name)")
    parser.add_argument("--out", help="default: conf/suite/<name>.yaml")
    args = parser.parse_args()
    suites = Path(__file__).resolve().parents[2] / "conf" / "suite"
    args.out = Path(args.out or suites / f"{args.name}.yaml")
    composed = ("test", "test_short", "validation_heldout", "validation_heldout_short", "train", "smoke")
    if args.out.resolve() in {suites.resolve() / f"{n}.yaml" for n in composed}:
        sys.exit(f"error: --name {args.name} / --out {args.out}: {', '.join(composed)} are composed by hand, "
                 "not sampled")
    if not 0 <= args.seed < 2**63:
        sys.exit(f"error: --seed must lie in [0, 2^63) (got {args.seed})")
    if args.per_kind < 1:
        sys.exit(f"error: --per-kind must be at least 1 (got {args.per_kind})")
    if args.out.is_dir() or not args.out.parent.is_dir():
        sys.exit(f"error: --out {args.out}: give a file in an existing folder")
    try:
        members = sample_members(args.per_kind, args.seed, args.family)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    heldout = args.family == "heldout"
    drawn_from = "the held-out kinds, which no training family draws" if heldout else f"the {args.family} training family"
    header = (f"# The {args.name} suite: {len(members)} instances of {drawn_from} "
              f"({args.per_kind} per kind), sampled with seed {args.seed}\n# by scripts/suites/make_validation_suite.py"
              f"{'' if args.family == 'default' else f' --family {args.family}'}. "
              f"{'Leave-kinds-out: c' if heldout else 'C'}heckpoints are chosen on it; no PPO update ever runs on it.\n")
    # the extended grid its stored runs use: lrs 3e-2 and 1e-1 with all seven schedules
    grid = {"extended_lrs": [3.0e-2, 1.0e-1], "extended_schedules": None}
    body = yaml.safe_dump({"name": args.name, **grid, "members": members}, sort_keys=False, width=120)
    args.out.write_text(header + body)
    print(f"{args.out}: {len(members)} members")


if __name__ == "__main__":
    main()
