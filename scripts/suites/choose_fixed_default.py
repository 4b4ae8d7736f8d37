"""Choose the untuned fixed_default: the one AdamW setting of the extended grid that does best over
the leave-kinds-out validation suite, reading that suite's stored grid and nothing else.

    python scripts/suites/choose_fixed_default.py                          # validation_heldout, top 10 shown
    python scripts/suites/choose_fixed_default.py --suite validation_heldout_short --top 5

Each (lr, schedule) that every member ran is scored per member as its median speedup over seeds
against the best of 35 (docs/method.md, the speedup), then by the median over members; the highest
score is the choice (ties: the lower lr, then the schedule's name). It is what a user gets who
never tunes and types one setting for every task, chosen without the test suite: the test suite's
config records it (conf/suite/test.yaml: fixed_default), and `lhopt evaluate` reports it beside
every method.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lhopt_cli.config.compose import ConfigError
from lhopt_cli.results.store import StoreError
from lhopt_cli.config.suites import member_curves
from lhopt_cli.results.suite_grid import TEST_SUITES, setting_scores


def choose(suite: str, grids: Path):
    """(lr, schedule, score) of the chosen setting and the table of every setting's score
    (columns lr, schedule, median, worst), best first."""
    members = member_curves(suite, grids)
    if not members:
        raise ConfigError(f"suite {suite} lists no tasks")
    empty = [m for m, curves in members.items() if curves.empty]
    if empty:
        raise ConfigError(f"{suite}/{empty[0]}: no runs in the stored grid {Path(grids) / suite} "
                          f"(python scripts/suites/make_reference_grids.py --suites {suite})")
    scores = setting_scores(members)
    if scores.empty:
        raise ConfigError(f"the stored grid of {suite} holds no setting that every member ran")
    table = scores.groupby(["lr", "schedule"], as_index=False).agg(median=("speedup", "median"),
                                                                   worst=("speedup", "min"))
    table = table.sort_values(["median", "lr", "schedule"], ascending=[False, True, True]).reset_index(drop=True)
    best = table.iloc[0]
    return float(best.lr), str(best.schedule), float(best["median"]), table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="validation_heldout", help="the validation suite it reads (never the test suite)")
    parser.add_argument("--grids", type=Path, default=Path(__file__).resolve().parents[2] / "benchmarks" / "grids")
    parser.add_argument("--top", type=int, default=10, help="settings shown")
    args = parser.parse_args()
    if args.top < 1:
        sys.exit(f"error: --top must be at least 1 (got {args.top})")
    if args.suite in TEST_SUITES:
        sys.exit(f"error: --suite {args.suite}: the test suite is only reported on; choose on validation_heldout")
    try:
        lr, schedule, score, table = choose(args.suite, args.grids)
    except (ConfigError, StoreError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    print(f"settings by median speedup over {args.suite}'s members (median over seeds each):")
    for r in table.head(args.top).itertuples():
        print(f"  lr {r.lr:<8g} {r.schedule:<14s} median {r.median:.2f}x  worst member {r.worst:.2f}x")
    print(f"chosen: lr {lr:g} {schedule} (median {score:.2f}x over {args.suite})")
    print(f"record: fixed_default: {{lr: {lr:g}, schedule: {schedule}, chosen_on: {args.suite}}}")


if __name__ == "__main__":
    main()
