"""Time and peak memory of `lhopt scaling-fit` against the number of input rows, measured in one run.

    python scripts/bench/bench_scaling_fit.py [--rows 100 1000 10000 100000 1000000] [--bootstrap 10]

For each size, a CSV of that many points (two methods, half each) drawn from the law
L = 1.69 + 406.4 / N^0.34 + 410.7 / D^0.28 (1% noise, N and D log-uniform) is fitted by the real
CLI in its own process, once with the parametric fit (the default) and once with
`parametric=false`; the table gives wall seconds and the process's peak resident memory. Inputs
above the parametric fit's limit (scaling/parametric.py, MAX_ROWS points per method) are refused
in one line before any work: the table says "refused" and how long the refusal took.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def write_points(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n = np.exp(rng.uniform(np.log(1e6), np.log(1e9), rows))
    d = np.exp(rng.uniform(np.log(1e8), np.log(1e11), rows))
    loss = (1.69 + 406.4 / n**0.34 + 410.7 / d**0.28) * np.exp(rng.normal(0, 0.01, rows))
    method = np.where(np.arange(rows) % 2 == 0, "baseline", "lhopt")
    pd.DataFrame({"method": method, "params": n, "tokens": d, "loss": loss}).to_csv(path, index=False)


def measure(csv: Path, out: Path, bootstrap: int, parametric: bool) -> tuple[str, float, float]:
    """(outcome, wall seconds, peak resident MB) of one scaling-fit in a child process."""
    command = [sys.executable, "-m", "lhopt_cli", "scaling-fit", f"inputs=[{csv}]", f"bootstrap={bootstrap}",
               f"parametric={str(parametric).lower()}", f"run_dir={out}"]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160"})
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    error = child.stderr.read().strip().splitlines()
    child.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    outcome = "ok" if code == 0 else ("refused" if error and "parametric=false" in error[-1] else f"exit {code}")
    return outcome, wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--bootstrap", type=int, default=10)
    args = parser.parse_args()
    if any(r < 20 for r in args.rows) or args.bootstrap < 10:
        parser.error("--rows must each be at least 20 and --bootstrap at least 10")
    print(f"| rows | parametric fit: outcome | s | peak MB | parametric=false: s | peak MB |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            csv = Path(tmp) / f"points_{rows}.csv"
            write_points(csv, rows)
            outcome, wall, peak = measure(csv, Path(tmp) / f"fit_{rows}", args.bootstrap, True)
            plain, plain_wall, plain_peak = measure(csv, Path(tmp) / f"plain_{rows}", args.bootstrap, False)
            if plain != "ok":
                print(f"error: parametric=false on {rows} rows: {plain}", file=sys.stderr)
                return 1
            print(f"| {rows:,} | {outcome} | {wall:.1f} | {peak:.0f} | {plain_wall:.1f} | {plain_peak:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
