"""Read logged results (lhopt run folders, CSV or Parquet) into one table for the fits.

Columns are mapped by name (`columns.params`, `columns.tokens`, `columns.flops`, `columns.loss`,
`columns.method`, `columns.step`); compute is the flops column where given, else 6 N D.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .frontier import FitError

STORE_COLUMNS = {"params": "model_params", "tokens": "tokens_or_examples", "flops": "flops", "loss": "valid_loss",
                 "method": "method", "step": "step"}


def _read(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FitError(f"{path}: no such file or folder")
    try:
        if path.is_dir():
            from ..results.store import load

            return load(path).rename(columns={v: k for k, v in STORE_COLUMNS.items()})
        if path.suffix == ".csv":
            return pd.read_csv(path)
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
    except FitError:
        raise
    except Exception as err:  # pandas and pyarrow raise many types for unreadable files
        raise FitError(f"{path}: not a readable table ({type(err).__name__})") from None
    raise FitError(f"{path}: expected an lhopt run folder, a .csv or a .parquet file")


def load_points(paths: list[str], columns: dict[str, str | None]) -> pd.DataFrame:
    """One row per (run, evaluation point): method, params, tokens, compute, loss."""
    frames = []
    for raw in paths:
        path = Path(raw)
        frame = _read(path)
        if not path.is_dir():
            loss = columns.get("loss") or "loss"
            if loss not in frame.columns:
                raise FitError(f"{path}: missing column(s) {loss} (set columns.loss to name yours)")
            # the other columns are optional: compute needs flops, or params and tokens
            mapping = {source: target for target, source in columns.items() if source and source in frame.columns}
            frame = frame.rename(columns=mapping)
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    if "loss" not in data.columns:
        raise FitError("no loss column: set columns.loss")
    if "method" not in data.columns:
        data["method"] = "all"
    has_flops = "flops" in data.columns and data.flops.notna().all() and (data.flops > 0).any()
    if not has_flops:
        if not {"params", "tokens"} <= set(data.columns):
            raise FitError("compute needs a flops column, or params and tokens columns (6 N D)")
        data["flops"] = 6.0 * data.params * data.tokens
    data = data[data.flops > 0]  # the initialisation point has no compute yet
    bad = (~np.isfinite(data.loss)) | (data.loss <= 0)
    if bad.any():
        raise FitError(f"{int(bad.sum())} loss values are NaN, infinite or not positive")
    data = data.drop(columns=["compute"], errors="ignore").rename(columns={"flops": "compute"})
    for method, group in data.groupby("method"):
        if len(group) < 5:
            raise FitError(f"method '{method}': {len(group)} points; at least 5 are needed")
        if "params" in group.columns and group.params.nunique() < 2:
            raise FitError(f"method '{method}': a single model size; scaling fits need at least 2")
    return data
