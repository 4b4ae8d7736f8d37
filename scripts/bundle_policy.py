"""Bundle a meta-training run's validation-chosen policy as the package's default policy.

    python scripts/bundle_policy.py RUN_DIR [--policy FILE] [--out src/lhopt_cli/policies]

Copies RUN_DIR/best.pt (the checkpoint chosen on the validation suite; or --policy, a file of that
run chosen otherwise on validation, e.g. by scripts/select_policy.py) to OUT/default.pt, with
the run's exact config (default_config.yaml) and its meta-training log (default_meta_train.csv,
whose validation columns are the validation curve), and draws the curve to
OUT/default_meta_training.png. Refuses (one line, exit 1) a run without best.pt, a file that
is not a loadable policy, and a bundle over 2 MB.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from lhopt_cli.control.checkpoint import PolicyFileError, load_policy

LIMIT_BYTES = 2_000_000
HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a train-policy run folder with best.pt")
    parser.add_argument("--policy", type=Path, help="a policy file of that run (default: RUN_DIR/best.pt)")
    parser.add_argument("--out", type=Path, default=HERE.parent / "src" / "lhopt_cli" / "policies")
    args = parser.parse_args()
    best, run = args.policy or args.run_dir / "best.pt", args.run_dir
    for needed in (best, run / "config.yaml", run / "meta_train.csv"):
        if not needed.is_file():
            print(f"error: {needed}: missing (a train-policy run with validation writes it)", file=sys.stderr)
            return 1
    try:
        _, meta = load_policy(best)
    except PolicyFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, args.out / "default.pt")
    shutil.copyfile(run / "config.yaml", args.out / "default_config.yaml")
    shutil.copyfile(run / "meta_train.csv", args.out / "default_meta_train.csv")
    figure = args.out / "default_meta_training.png"
    subprocess.run([sys.executable, str(HERE / "meta_train_summary.py"), str(run), "--block", "25",
                    "--png", str(figure)], check=True, capture_output=True)
    files = ["default.pt", "default_config.yaml", "default_meta_train.csv", figure.name]
    size = sum((args.out / f).stat().st_size for f in files)
    if size > LIMIT_BYTES:
        print(f"error: the bundle is {size / 1e6:.2f} MB, over the 2 MB limit", file=sys.stderr)
        return 1
    config = meta.get("config") or {}
    print(f"{args.out}: default.pt = {best} (PPO iteration {config.get('trained_iterations')}, "
          f"{config.get('weights', 'raw')} weights, validation {config.get('validation_speedup', float('nan')):.3f}x); "
          f"bundle {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
