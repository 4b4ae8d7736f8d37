"""Public path of the Lightning callbacks: `from lhopt_cli.integrations.lightning import LhoptCallback`."""
from lhopt_cli.loop.integrations.lightning import LhoptCallback, ReplayCallback

__all__ = ["LhoptCallback", "ReplayCallback"]
