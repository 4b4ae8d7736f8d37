"""Write a policy file from a meta-training checkpoint (for a run still going, or stopped).

    python scripts/export_policy.py RUN_DIR OUT.pt

The policy file records the run's config plus `trained_iterations`, the checkpoint's iteration.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lhopt_cli.control.checkpoint import save_policy
from lhopt_cli.control.policy import lhopt_agent
from lhopt_cli.control.protocol import ObservationProtocol
from lhopt_cli.train_policy import training_protocol


def main(run_dir: str, out: str) -> None:
    run = Path(run_dir)
    cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True)
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["ppo"]
    agent = lhopt_agent(int(cfg["controller"]["hidden"]), float(cfg["controller"]["obs_clip"]))
    agent.load_state_dict(state["agent"])
    cfg["trained_iterations"] = int(state["iteration"])
    # a run from before configs held the protocol keys is read as it was trained
    protocol = (training_protocol(OmegaConf.create(cfg)) if "eval_points" in cfg["controller"]
                else ObservationProtocol.from_training_config(cfg))
    save_policy(agent, Path(out), cfg, protocol)
    print(f"{out}: policy after {state['iteration']} PPO iterations ({state['episodes']} episodes)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
