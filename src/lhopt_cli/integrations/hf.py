"""Public path of the Trainer callbacks: `from lhopt_cli.integrations.hf import LhoptTrainerCallback`."""
from lhopt_cli.loop.integrations.hf import CONTROLLER_FILE, LhoptTrainerCallback, ReplayTrainerCallback

__all__ = ["CONTROLLER_FILE", "LhoptTrainerCallback", "ReplayTrainerCallback"]
