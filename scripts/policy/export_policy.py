"""Write a policy file from a meta-training checkpoint (for a run still going, or stopped).

    python scripts/policy/export_policy.py RUN_DIR OUT.pt [--polyak]

The policy file records the run's config plus `trained_iterations`, the checkpoint's iteration, and
`weights`: raw, or polyak for the Polyak-averaged weights of a run that keeps them (--polyak).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from lhopt_cli.config.compose import ConfigError
from lhopt_cli.control.checkpoint import save_policy
from lhopt_cli.control.policy import lhopt_agent
from lhopt_cli.control.protocol import ObservationProtocol
from lhopt_cli.commands.train_policy import load_checkpoint, training_protocol


def main(run_dir: str, out: str, polyak: bool = False) -> None:
    run = Path(run_dir)
    for needed in (run / "config.yaml", run / "checkpoint.pt"):
        if not needed.is_file():
            sys.exit(f"error: {needed}: missing (RUN_DIR is a train-policy run folder with a checkpoint)")
    if Path(out).is_dir():
        sys.exit(f"error: {out}: a folder; give the policy file's path")
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True)
        state = load_checkpoint(run / "checkpoint.pt")["ppo"]
    except (ConfigError, ValueError, OSError) as err:
        sys.exit(f"error: {err}")
    agent = lhopt_agent(int(cfg["controller"]["hidden"]), float(cfg["controller"]["obs_clip"]),
                        privileged_critic=bool(cfg["controller"].get("privileged_critic", False)))
    if polyak and state.get("polyak") is None:
        sys.exit(f"error: {run / 'checkpoint.pt'} keeps no Polyak average (its run has ppo.polyak=null)")
    agent.load_state_dict(state["polyak"] if polyak else state["agent"])
    cfg["trained_iterations"] = int(state["iteration"])
    cfg["weights"] = "polyak" if polyak else "raw"
    # a run from before configs held the protocol keys is read as it was trained
    protocol = (training_protocol(OmegaConf.create(cfg).controller) if "eval_points" in cfg["controller"]
                else ObservationProtocol.from_training_config(cfg))
    try:
        save_policy(agent, Path(out), cfg, protocol)
    except OSError as err:
        sys.exit(f"error: {out}: cannot be written ({err.strerror or err})")
    print(f"{out}: policy after {state['iteration']} PPO iterations ({state['episodes']} episodes), "
          f"{cfg['weights']} weights")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("out")
    parser.add_argument("--polyak", action="store_true", help="the Polyak-averaged weights, not the raw ones")
    args = parser.parse_args()
    main(args.run_dir, args.out, args.polyak)
