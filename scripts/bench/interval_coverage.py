"""How often the parametric fit's 95% bootstrap intervals hold the true law, measured on synthetic laws.

    python scripts/bench/interval_coverage.py [--laws 50] [--draws 200] [--seed 0]

Each law is Chinchilla-like: L(N, D) = E + A / N^alpha + B / D^beta with E in [1, 2.5], A and B
log-uniform in [100, 1000], alpha and beta in [0.25, 0.45]; its points are 30 to 300 (N, D)
pairs log-uniform over N in [1e6, 1e9] and D in [1e8, 1e11], with 0.5% to 2% multiplicative
noise. Each is fitted as `lhopt scaling-fit` fits it (scaling/parametric.py: the fit, then
`--draws` bootstrap refits and percentile intervals). Prints, per parameter (and the
compute-optimal exponents a, b), the share of laws whose interval holds the truth.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from lhopt_cli.scaling.frontier import interval
from lhopt_cli.scaling.parametric import NAMES, bootstrap_parametric, fit_parametric

COLUMNS = (*NAMES, "a", "b")


def draw_law(rng: np.random.Generator) -> dict[str, float]:
    law = {"E": rng.uniform(1.0, 2.5), "A": float(np.exp(rng.uniform(np.log(100), np.log(1000)))),
           "alpha": rng.uniform(0.25, 0.45), "B": float(np.exp(rng.uniform(np.log(100), np.log(1000)))),
           "beta": rng.uniform(0.25, 0.45)}
    total = law["alpha"] + law["beta"]
    return {**law, "a": law["beta"] / total, "b": law["alpha"] / total}


def draw_points(law: dict, rng: np.random.Generator, points: tuple[int, int] = (30, 300)):
    count = int(round(np.exp(rng.uniform(np.log(points[0]), np.log(points[1])))))
    noise = rng.uniform(0.005, 0.02)
    n = np.exp(rng.uniform(np.log(1e6), np.log(1e9), count))
    d = np.exp(rng.uniform(np.log(1e8), np.log(1e11), count))
    loss = (law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]) * np.exp(rng.normal(0, noise, count))
    return n, d, loss


def coverage(laws: int, draws: int, seed: int = 0, points: tuple[int, int] = (30, 300)) -> dict[str, float]:
    """The share of `laws` synthetic laws whose 95% interval holds the truth, per parameter."""
    rng = np.random.default_rng(seed)
    held = dict.fromkeys(COLUMNS, 0)
    for _ in range(laws):
        law = draw_law(rng)
        n, d, loss = draw_points(law, rng, points)
        fit = fit_parametric(n, d, loss)
        boot = bootstrap_parametric(n, d, loss, fit, draws)
        for k, name in enumerate(COLUMNS):
            low, high = interval(boot[:, k])
            held[name] += bool(low <= law[name] <= high)
    return {name: count / laws for name, count in held.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laws", type=int, default=50)
    parser.add_argument("--draws", type=int, default=200, help="bootstrap refits per law (scaling-fit's bootstrap)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.laws < 1 or args.draws < 10:
        parser.error("--laws must be at least 1 and --draws at least 10")
    start = time.perf_counter()
    shares = coverage(args.laws, args.draws, args.seed)
    print(f"95% intervals over {args.laws} synthetic laws, {args.draws} bootstrap refits each "
          f"({time.perf_counter() - start:.0f} s)")
    print("| parameter | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    print("| holds the truth | " + " | ".join(f"{shares[c]:.0%}" for c in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
