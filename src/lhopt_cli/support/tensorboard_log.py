"""TensorBoard logging (the field's usual viewer), optional: torch.utils.tensorboard needs the
`tensorboard` package (`pip install "lhopt-cli[tensorboard]"`).

`train-policy tensorboard=true` writes each iteration's row of meta_train.csv as scalars
(`meta_train/<column>`, step = the iteration) into run_dir/tensorboard/; a resumed run drops the
events logged after its checkpoint, as it drops the log's rows. `Controller.log_to(writer)` writes
each decision's hyperparameters (`lhopt/lr`, ...) at the optimizer step it was made.
"""
from __future__ import annotations

import math
from pathlib import Path


class TensorBoardUnavailable(RuntimeError):
    """tensorboard is not installed (one line saying how to install it)."""


def summary_writer(log_dir: str | Path, purge_step: int | None = None):
    """A torch SummaryWriter on `log_dir`; events at steps >= purge_step are dropped (a resumed
    run). Raises TensorBoardUnavailable without the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TensorBoardUnavailable('TensorBoard logging needs the tensorboard package: pip install "lhopt-cli[tensorboard]"'
                                     ) from None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def log_scalars(writer, prefix: str, values: dict, step: int) -> None:
    """Every finite number of `values` as `<prefix>/<key>` at `step`; the rest is skipped."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            writer.add_scalar(f"{prefix}/{key}", float(value), step)
