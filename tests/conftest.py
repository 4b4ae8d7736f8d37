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

    from lhopt_cli.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


def lhopt_env() -> dict:
    env = dict(os.environ)
    env.setdefault("COLUMNS", "120")
    return env
