import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LHOPT = Path(sys.executable).with_name("lhopt")


@pytest.fixture
def run_cli():
    """Invoke the real `lhopt` console entry point in-process (typer's CliRunner)."""
    from typer.testing import CliRunner

    from lhopt_cli.commands.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


def lhopt_env() -> dict:
    env = dict(os.environ)
    env.setdefault("COLUMNS", "120")
    return env


@pytest.fixture(scope="session")
def smoke_policy(tmp_path_factory):
    """A policy file from a real (tiny) `lhopt train-policy debug=smoke` run."""
    from rich.console import Console

    from lhopt_cli.commands import train_policy
    from lhopt_cli.config.compose import compose, make_run_dir

    run_dir = tmp_path_factory.mktemp("smoke_policy")
    cfg = compose("train_policy", ["debug=smoke", "task_family.kinds.mnist1d_conv.weight=0", f"run_dir={run_dir}"])
    make_run_dir(cfg)
    return train_policy.run(train_policy.plan(cfg, run_dir), Console(quiet=True))


@pytest.fixture
def policy_with_protocol(smoke_policy, tmp_path):
    """A copy of the smoke policy whose file fixes another observation protocol (fields given)."""
    import torch

    from lhopt_cli.control.checkpoint import atomic_save, policy_protocol

    def make(**fields):
        blob = torch.load(smoke_policy, map_location="cpu", weights_only=True)
        blob["protocol"] = {**policy_protocol(blob).as_dict(), **fields}
        path = tmp_path / ("policy_" + "_".join(f"{k}{v}" for k, v in sorted(fields.items())) + ".pt")
        atomic_save(blob, path)
        return path

    return make
