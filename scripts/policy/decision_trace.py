"""What a policy does with the learning rate on each member of a validation suite: its decision trace.

    python scripts/policy/decision_trace.py [POLICY] [--suite validation_heldout] [--seeds 0] [--markdown]

Each member runs greedily under the policy, guard on (as `lhopt evaluate`), and its decisions are
read against the member's best of 35 (the stored AdamW grid's best run, its peak lr): the lr after
the first decision, how often it changes after that and how often downward, the step of the last
change; whether the lr was above the best at a quarter of the run and then went down at least
once; and the final lr level (the policy's level, before its own decay) against the best lr.
Two counts close the table, the controller's goals: every member above its best at a quarter goes
down after it, and the final level lies within 3x of the best lr on at least 9 of 12. The test
suite is refused.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from lhopt_cli.config.compose import ConfigError
from lhopt_cli.control.rollout import run_policy
from lhopt_cli.commands.evaluate import summarize
from lhopt_cli.commands.validation import policy_and_suite

BUNDLED = Path(__file__).resolve().parents[2] / "src" / "lhopt_cli" / "policies" / "default.pt"
WITHIN = 3.0  # the final level counts as found within this factor of the best lr


def trace(decisions: list[dict], total_steps: int, best_lr: float) -> dict:
    """One run's decision trace against `best_lr`: first lr, changes after it (downward), the step
    of the last change, the lr at a quarter of the run, a downward change after that quarter, and
    the final level. `decisions`: run_policy's log (step, lr, ...), in order."""
    steps, lrs = [int(d["step"]) for d in decisions], [float(d["lr"]) for d in decisions]
    changes = [(s, new, old) for s, new, old in zip(steps[1:], lrs[1:], lrs[:-1]) if new != old]
    quarter = total_steps / 4
    at_quarter = next((lr for s, lr in zip(reversed(steps), reversed(lrs)) if s <= quarter), lrs[0])
    return {"first_lr": lrs[0], "changes": len(changes), "down": sum(new < old for _, new, old in changes),
            "last_change": changes[-1][0] if changes else None, "lr_at_quarter": at_quarter,
            "above_at_quarter": at_quarter > best_lr * (1 + 1e-9),
            "down_after_quarter": any(new < old for s, new, old in changes if s > quarter),
            "final_lr": lrs[-1], "within": best_lr / WITHIN <= lrs[-1] <= best_lr * WITHIN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", nargs="?", type=Path, default=BUNDLED, help="a policy file (default: the bundled one)")
    parser.add_argument("--suite", default="validation_heldout", help="a validation suite (conf/suite/ name)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--grid-dir", type=Path, default=Path("outputs/decision-trace/grids"),
                        help="where grid runs the stored grids lack are computed")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    try:
        agent, protocol, suite = policy_and_suite(args.policy, args.suite, args.seeds, args.grid_dir)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    rows = []
    for member in suite.members:
        runs = run_policy(agent, member.task_cfg, args.seeds, protocol, greedy=True, guard=True)
        ours = pd.DataFrame([{**point, "seed": seed, "method": "lhopt"}
                             for seed, run in zip(args.seeds, runs) for point in run.result.curve])
        scored = {r["seed"]: r for r in summarize(member.id, args.seeds, member.grid_curves, ours, suite.paper_lrs)
                  if r["method"] == "lhopt"}
        for seed, run in zip(args.seeds, runs):
            best = scored[seed]
            total = int(run.result.curve[-1]["step"])
            rows.append({"member": member.id, "seed": seed, "best_lr": best["best_lr"], "schedule": best["best_schedule"],
                         "speedup": best["speedup"], **trace(run.decisions, total, best["best_lr"])})
    if args.markdown:
        print("| member | seed | best of 35 | speedup | lr after the first decision | changes after it (down) | "
              "last change at step | lr at 1/4 | down after 1/4 | final level |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        last = "-" if r["last_change"] is None else str(r["last_change"])
        final = f"{r['final_lr']:.2g} ({'within' if r['within'] else 'not within'} {WITHIN:g}x)"
        if args.markdown:
            print(f"| {r['member']} | {r['seed']} | {r['best_lr']:.0e} {r['schedule']} | {r['speedup']:.2f}x | "
                  f"{r['first_lr']:.2g} | {r['changes']} ({r['down']}) | {last} | {r['lr_at_quarter']:.2g} | "
                  f"{'yes' if r['down_after_quarter'] else 'no'} | {final} |")
        else:
            print(f"{r['member']:32s} s{r['seed']} best {r['best_lr']:.0e} speedup {r['speedup']:.2f}x first "
                  f"{r['first_lr']:.2g} changes {r['changes']} ({r['down']} down) last {last} final {final}")
    above = [r for r in rows if r["above_at_quarter"]]
    print(f"down after the first quarter where the lr was above the best then: "
          f"{sum(r['down_after_quarter'] for r in above)} of {len(above)} (goal: all)")
    print(f"final level within {WITHIN:g}x of the best lr: {sum(r['within'] for r in rows)} of {len(rows)} "
          f"(goal: at least 3/4)")


if __name__ == "__main__":
    main()
