"""Compute the stored reference grids: the 5 x 7 AdamW grid and the suite's extended grid (its
`extended_lrs` with its `extended_schedules`) for every member of the suites given, 3 seeds each.

    python scripts/suites/make_reference_grids.py                        # both suites, paper + extended lrs
    python scripts/suites/make_reference_grids.py --suites test --members co2_forecast --seeds 0
    python scripts/suites/make_reference_grids.py --out /tmp/g debug=smoke    # trailing args: Hydra overrides

Runs go into one results store per suite (`benchmarks/grids/<suite>/`, Parquet), validated at the
observation protocol's points (conf/controller: eval_points), so `lhopt evaluate suite=<suite>`
(which reads them) only runs the methods being compared. Rerunning resumes: finished runs are
skipped. MANIFEST.json records the command, the package versions, and the wall and CPU seconds of
each member of each call (written after every member, so a killed call keeps its record).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console

from lhopt_cli.commands import baseline_grid
from lhopt_cli.config.compose import ConfigError, compose
from lhopt_cli.config.suites import member_overrides

PAPER_LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
REPO = Path(__file__).resolve().parents[2]


def member_grid_config(member: dict, seeds: list[int], extended: tuple[list[float], list[str] | None], run_dir: Path,
                       workers: int, overrides: list[str]):
    """The grid of one member: the paper's 5 x 7, then the `extended` (lrs, schedules) of its suite."""
    eval_points = int(compose("train_policy", []).controller.eval_points)
    lrs, schedules = extended
    return compose("baseline_grid", [*member_overrides(member), f"task.eval_points={eval_points}",
                                     f"seeds={seeds}", f"grid.lrs={PAPER_LRS}", f"grid.extended_lrs={lrs}",
                                     "grid.extended_schedules=" + ("null" if schedules is None else f"[{','.join(schedules)}]"),
                                     f"run_dir={run_dir}", f"executor.workers={workers}", *overrides])


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished worker processes (user + system)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", nargs="+", default=["validation", "validation_heldout", "test"])
    parser.add_argument("--members", nargs="*", help="only these member ids (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--paper-only", action="store_true", help="the 5 x 7 grid without the extended lrs")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: one per core)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "grids"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every grid (e.g. debug=smoke)")
    # KEY=VALUE words are Hydra overrides wherever they stand (`--seeds 0 debug=smoke`: not a seed)
    words = sys.argv[1:]
    overrides = [w for w in words if "=" in w and not w.startswith("-")]
    args = parser.parse_args([w for w in words if w not in overrides])
    args.overrides = [*args.overrides, *overrides]
    try:
        make(args)
    except ConfigError as err:
        sys.exit(f"error: {err}")


def make(args: argparse.Namespace) -> None:
    console = Console(soft_wrap=True)
    if args.overrides and Path(args.out).resolve() == (REPO / "benchmarks" / "grids").resolve():
        raise ConfigError(f"overrides ({' '.join(args.overrides)}) would change the stored reference grids; "
                          "write such grids elsewhere with --out DIR")
    suites = {name: OmegaConf.to_container(compose("evaluate", [f"suite={name}"]).suite, resolve=True)
              for name in args.suites}
    for name, suite in suites.items():
        if not suite["members"]:
            raise ConfigError(f"suite {name} lists no tasks; the stored grids are for suites that do (validation, test)")
    known = {m["id"] for suite in suites.values() for m in suite["members"]}
    unknown = sorted(set(args.members or []) - known)
    if unknown:
        raise ConfigError(f"unknown member id(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    # every grid planned (its overrides checked) before any folder is made: a bad one leaves nothing
    planned = {}
    for suite_name, suite in suites.items():
        evaluate_cfg = compose("evaluate", [f"suite={suite_name}"])  # the suite's extended grid (or evaluate's)
        extended = ([], None) if args.paper_only else (list(evaluate_cfg.extended_lrs or []),
                                                       None if evaluate_cfg.extended_schedules is None
                                                       else list(evaluate_cfg.extended_schedules))
        run_dir = Path(args.out) / suite_name
        members = [m for m in suite["members"] if not args.members or m["id"] in args.members]
        planned[suite_name] = (extended, [(m, baseline_grid.plan(member_grid_config(
            m, args.seeds, extended, run_dir, args.workers, args.overrides))) for m in members])
    for suite_name, (extended, members) in planned.items():
        run_dir = Path(args.out) / suite_name
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest_path = run_dir / "MANIFEST.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"calls": []}
        call = {"command": "python scripts/suites/make_reference_grids.py " + " ".join(sys.argv[1:]),
                "date": date.today().isoformat(), "seeds": args.seeds, "lrs": PAPER_LRS + extended[0],
                "extended_schedules": extended[1], "machine": platform.machine(),
                "packages": {name: version(name) for name in ("lhopt-cli", "torch", "numpy", "statsmodels",
                                                              "scikit-image", "scikit-learn")},
                "members": [], "member_wall_s": {}, "member_cpu_s": {}}
        manifest["calls"].append(call)
        for member, grid in members:
            console.print(f"[bold]{suite_name}/{member['id']}[/bold]")
            start, cpu = time.perf_counter(), cpu_seconds()
            baseline_grid.run(grid, run_dir, console)
            call["members"].append(member["id"])
            call["member_wall_s"][member["id"]] = round(time.perf_counter() - start, 1)
            call["member_cpu_s"][member["id"]] = round(cpu_seconds() - cpu, 1)
            call["wall_s"] = round(sum(call["member_wall_s"].values()), 1)
            call["cpu_s"] = round(sum(call["member_cpu_s"].values()), 1)
            tmp = manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest, indent=1) + "\n")
            tmp.replace(manifest_path)
        console.print(f"{suite_name}: {len(members)} members in {run_dir} ({call.get('wall_s', 0)} s, "
                      f"{call.get('cpu_s', 0)} CPU s)")


if __name__ == "__main__":
    main()
