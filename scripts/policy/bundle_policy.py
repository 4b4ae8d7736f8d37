"""Bundle a meta-training run's validation-chosen policy as the package's default policy.

    python scripts/policy/bundle_policy.py RUN_DIR [--policy FILE] [--out src/lhopt_cli/policies]

Copies RUN_DIR/best.pt (the checkpoint chosen on the validation suite; or --policy, a file of that
run chosen otherwise on validation, e.g. by scripts/policy/select_policy.py) to OUT/default.pt, with
the run's exact config (default_config.yaml) and its meta-training log (default_meta_train.csv,
whose validation columns are the validation curve), and draws the curve to
OUT/default_meta_training.png. The policy's protocol must be the run's, but for an lr decay set
after training (scripts/policy/set_lr_decay.py). Refuses (one line, exit 1) a run without best.pt, a file
that is not a loadable policy, and a bundle over 2 MB.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from lhopt_cli.control.checkpoint import PolicyFileError, load_policy, policy_protocol
from lhopt_cli.control.protocol import ProtocolError
from lhopt_cli.commands.train_policy import training_protocol

LIMIT_BYTES = 2_000_000
HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a train-policy run folder with best.pt")
    parser.add_argument("--policy", type=Path, help="a policy file of that run (default: RUN_DIR/best.pt)")
    parser.add_argument("--out", type=Path, default=HERE.parents[1] / "src" / "lhopt_cli" / "policies")
    args = parser.parse_args()
    policy, run = args.policy or args.run_dir / "best.pt", args.run_dir
    for needed in (policy, run / "config.yaml", run / "meta_train.csv"):
        if needed.is_dir():
            print(f"error: {needed}: a folder, not a file", file=sys.stderr)
            return 1
        if not needed.is_file():
            print(f"error: {needed}: missing (a train-policy run with validation writes it)", file=sys.stderr)
            return 1
    try:
        _, meta = load_policy(policy)
        run_protocol = training_protocol(OmegaConf.load(run / "config.yaml").controller)
    except (PolicyFileError, ProtocolError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # a decay set after training (scripts/policy/set_lr_decay.py) is the one field that may differ
    if replace(policy_protocol(meta), lr_decay=run_protocol.lr_decay) != run_protocol:
        print(f"error: {policy} was trained under another observation protocol than {run} records: "
              "not a policy of that run", file=sys.stderr)
        return 1
    if args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out}: a file, not a folder", file=sys.stderr)
        return 1
    files = {"default.pt": policy, "default_config.yaml": run / "config.yaml", "default_meta_train.csv": run / "meta_train.csv"}
    with tempfile.TemporaryDirectory() as staging:  # the whole bundle is made and checked before any file is replaced
        staged = Path(staging)
        for name, source in files.items():
            shutil.copyfile(source, staged / name)
        figure = staged / "default_meta_training.png"
        summary = subprocess.run([sys.executable, str(HERE / "meta_train_summary.py"), str(run), "--block", "25",
                                  "--png", str(figure)], capture_output=True, text=True)
        if summary.returncode != 0:
            print(f"error: {run / 'meta_train.csv'}: not a readable meta-training log "
                  f"({(summary.stderr.strip().splitlines() or ['no output'])[-1][:120]})", file=sys.stderr)
            return 1
        size = sum(path.stat().st_size for path in staged.iterdir())
        if size > LIMIT_BYTES:
            print(f"error: the bundle is {size / 1e6:.2f} MB, over the 2 MB limit", file=sys.stderr)
            return 1
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            for path in staged.iterdir():
                shutil.copyfile(path, args.out / path.name)
        except OSError as err:
            print(f"error: --out {args.out}: {err.strerror or err}", file=sys.stderr)
            return 1
    config = meta.get("config") or {}
    score = config.get("validation_speedup")
    print(f"{args.out}: default.pt = {policy} (PPO iteration {config.get('trained_iterations')}, "
          f"{config.get('weights', 'raw')} weights"
          + (f", validation {score:.3f}x" if isinstance(score, (int, float)) else "") + f"); bundle {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
