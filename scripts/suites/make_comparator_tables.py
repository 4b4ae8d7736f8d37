"""Run a suite's comparators (the tuning-free optimizers and the range test) once and keep them.

    python scripts/suites/make_comparator_tables.py --suite test [--seeds 0 1 2] [--methods dog,prodigy] [--workers 2] [--out DIR] [overrides]

Every extra baseline of `lhopt evaluate` (method_runs.EXTRA_BASELINES, or --methods) runs on every
member of the suite at every seed, at the task settings `lhopt evaluate suite=<suite>` uses with
the bundled policy's protocol, and is recorded as evaluate records it into
benchmarks/comparators/<suite>/ (runs.parquet, results.parquet). `lhopt evaluate` on that suite
then reads these runs instead of running them again, so `make bench-speedup` runs only the
policy. Resumable: runs already recorded are kept. Hydra overrides go to the evaluate config
(e.g. debug=smoke); they change the task settings, so they need --out (the stored tables hold
the suites' own settings only).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from lhopt_cli.commands import baseline_grid
from lhopt_cli.config.compose import ConfigError, compose
from lhopt_cli.commands.evaluate import STORED_COMPARATORS, method_run_id, plan, record_method_run
from lhopt_cli.support.executor import resolve_workers, run_jobs
from lhopt_cli.commands.method_runs import EXTRA_BASELINES, MethodRun, execute
from lhopt_cli.support.progress import progress_bar
from lhopt_cli.results.store import ResultsStore

BUNDLED = Path(__file__).resolve().parents[2] / "src" / "lhopt_cli" / "policies" / "default.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True, help="a conf/suite/ name (test, validation_heldout, validation)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", default=",".join(EXTRA_BASELINES),
                        help="comma-separated extra baselines to run (default: all)")
    parser.add_argument("--workers", type=int, default=1, help="processes (0: one per core)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/comparators/<suite>")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the evaluate config")
    args = parser.parse_args()
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in EXTRA_BASELINES]
    if unknown or not args.methods:
        sys.exit(f"error: unknown comparator '{unknown[0] if unknown else ''}'; known: {', '.join(EXTRA_BASELINES)}")
    if len(set(args.methods)) < len(args.methods):
        sys.exit("error: --methods names a comparator more than once")
    if args.overrides and args.out is None:
        sys.exit("error: overrides change the task settings: give --out (the stored tables hold the suites' own)")
    out = args.out or STORED_COMPARATORS / args.suite
    console = Console(soft_wrap=True)
    try:
        cfg = compose("evaluate", [f"suite={args.suite}", f"seeds={list(args.seeds)}", f"policy={BUNDLED}",
                                   *args.overrides])
        if cfg.get("suite") is None:
            raise ConfigError(f"suite={args.suite}: not a suite")
        planned = plan(cfg)  # the bundled policy's protocol places the validations, as evaluate's runs
        protocol = planned.protocol
        jobs, store = [], ResultsStore(out) if (out / "runs.parquet").exists() else None
        done = store.finished_ids() if store is not None else set()
        for member in planned.members:
            task_json, key = member.task_json, baseline_grid.task_key(json.loads(member.task_json))
            jobs += [MethodRun(member.id, method, task_json, seed) for method in args.methods for seed in args.seeds
                     if method_run_id(member.id, key, seed, method) not in done]
    except ConfigError as error:
        sys.exit(f"error: {error}")
    if not jobs:
        console.print(f"{out}: every comparator run is recorded")
        return
    out.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(out)
    workers = resolve_workers(args.workers, len(jobs))
    console.print(f"{len(jobs)} comparator runs on {workers} worker process{'es' * (workers > 1)} into {out}")
    with progress_bar(console) as bar:
        progress = bar.add_task("comparator runs", total=len(jobs))
        for job, run in run_jobs(execute, jobs, workers):
            record_method_run(store, out, job, run, protocol, "", "")
            bar.advance(progress)
    console.print(f"{out}: {len(store.finished_ids())} comparator runs recorded")


if __name__ == "__main__":
    main()
