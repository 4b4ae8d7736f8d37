"""The meta-training curve of a train-policy run: a markdown table of block means and a figure.

    python scripts/policy/meta_train_summary.py RUN_DIR_OR_CSV [--block 250] [--png curve.png]

Per block of PPO iterations: the mean episode reward (the log speedup over the reference AdamW
run, clipped), the policy's entropy, the value function's explained variance and, where the run
was validated, the last validation score in the block (median speedup over the validation
suite's best of 35; and of the Polyak-averaged weights where the run keeps them). The figure
shows the validation scores on a second axis.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from lhopt_cli.support.plots import meta_training_plot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a train-policy run folder or its meta_train.csv")
    parser.add_argument("--block", type=int, default=250)
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    path = args.source / "meta_train.csv" if args.source.is_dir() else args.source
    log = pd.read_csv(path)
    log["block"] = (log.iteration - 1) // args.block
    validated = "validation_speedup" in log and log.validation_speedup.notna().any()
    averaged = "validation_speedup_polyak" in log and log.validation_speedup_polyak.notna().any()
    print("| iterations | episodes | mean episode reward | entropy | explained variance |"
          + (" validation speedup |" if validated else "") + (" Polyak weights |" if averaged else ""))
    print("|---|---|---|---|---|" + ("---|" if validated else "") + ("---|" if averaged else ""))
    for _, rows in log.groupby("block"):
        score = ""
        for column, shown in (("validation_speedup", validated), ("validation_speedup_polyak", averaged)):
            scores = rows[column].dropna() if shown else pd.Series(dtype=float)
            score += (f" {scores.iloc[-1]:.3f}x |" if len(scores) else " |") if shown else ""
        print(f"| {rows.iteration.min()}-{rows.iteration.max()} | {rows.episodes.max()} | "
              f"{rows.mean_episode_reward.mean():+.3f} | {rows.entropy.mean():.2f} | {rows.explained_variance.mean():.2f} |"
              + score)
    if args.png:
        meta_training_plot(log, path.parent.name, args.png)
        print(f"\nfigure: {args.png}")


if __name__ == "__main__":
    main()
