"""Write a copy of a policy file whose observation protocol has another lr decay.

    python scripts/policy/set_lr_decay.py POLICY OUT.pt --lr-decay cosine

The decay (control/protocol.py: a baseline schedule multiplying the policy's learning rate at
every step) is the one protocol field a trained policy can be run under without retraining: its
features stay unitless and its actions relative. Use it to score a policy under a decay on the
validation suites (scripts/policy/select_policy.py) before bundling it. The copy's config records the
change (`lr_decay_set_after_training`) and drops the validation score measured under the old
decay. Refuses (one line, exit 1) an unreadable policy file, an
unknown decay, an OUT that is a folder and one that cannot be written (e.g. in a missing folder).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from lhopt_cli.control.checkpoint import PolicyFileError, load_policy, policy_protocol, save_policy
from lhopt_cli.control.protocol import ProtocolError
from lhopt_cli.inner.schedules import SCHEDULES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", type=Path, help="a policy file (a run's best.pt, policy.pt, a bundle)")
    parser.add_argument("out", type=Path, help="the copy to write")
    parser.add_argument("--lr-decay", required=True, help=f"one of {', '.join(SCHEDULES)} (constant: none)")
    args = parser.parse_args()
    if args.out.is_dir():
        print(f"error: {args.out}: a folder; give the policy file's path", file=sys.stderr)
        return 1
    try:
        agent, meta = load_policy(args.policy)
        protocol = replace(policy_protocol(meta), lr_decay=args.lr_decay)
    except (PolicyFileError, ProtocolError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    config = dict(meta.get("config") or {})
    config["lr_decay_set_after_training"] = args.lr_decay
    config.pop("validation_speedup", None)  # measured under the old decay: not this file's score
    try:
        save_policy(agent, args.out, config, protocol)
    except OSError as err:
        print(f"error: {args.out}: cannot be written ({err.strerror or err})", file=sys.stderr)
        return 1
    print(f"{args.out}: {args.policy} with lr_decay={args.lr_decay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
