"""Read logged results (lhopt run folders, CSV or Parquet) into one table for the fits.

Columns are mapped by name (`columns.params`, `columns.tokens`, `columns.flops`, `columns.loss`,
`columns.method`, `columns.step`); compute is the flops column where given, else 6 N D.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from lhopt_cli.support.files import not_a_regular_file
from lhopt_cli.scaling.frontier import FitError

STORE_COLUMNS = {"params": "model_params", "tokens": "tokens_or_examples", "flops": "flops", "loss": "valid_loss",
                 "method": "method", "step": "step"}


def _read(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FitError(f"{path}: no such file or folder")
    if not path.is_dir():
        reason = not_a_regular_file(path)
        if reason is not None:
            raise FitError(reason)
        if path.stat().st_size > MAX_INPUT_BYTES:
            raise FitError(f"{path}: {path.stat().st_size:,} bytes, above the {MAX_INPUT_BYTES:,} a scaling-fit input "
                           "may hold (a CSV of 1,000,000 rows takes tens of MB)")
    try:
        if path.is_dir():
            from lhopt_cli.results.store import load

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


# A table is read whole: pandas peaks near 5 bytes of memory per byte of CSV, so 256 MiB (about
# 1.3 GB at the peak) bounds what a bad input can take; a CSV of 1,000,000 rows takes tens of MB
MAX_INPUT_BYTES = 2**28

UNITS = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}  # as papers' tables write sizes: 44M, 2B
NUMERIC = ("params", "tokens", "flops", "loss", "step")


def parse_number(value) -> float:
    """A number as tables write it: 3.74, 1e9, 44M, 2.5B, 1.4T (K, M, B or G, T; any case).
    Raises ValueError for anything else."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().replace(",", "").replace("_", "")
    scale = UNITS.get(text[-1:].upper()) if text else None
    return float(text[:-1]) * scale if scale else float(text)


def _headers(path: Path, frame: pd.DataFrame) -> list[str]:
    """The column names as the file writes them (pandas renames a CSV's repeated name 'loss' to
    'loss.1'; the header row is read again to see it)."""
    if path.suffix != ".csv":
        return [str(c) for c in frame.columns]
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        return next(csv.reader(handle), [str(c) for c in frame.columns])


# Unit suffixes are read on sizes only: a loss or a step written "1.5M" is not a number
SIZED = ("params", "tokens", "flops")


def _numeric(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The numeric columns as floats (unit suffixes read); FitError naming the column and its
    first value that is not a number."""
    for name in NUMERIC:
        if name not in frame.columns or pd.api.types.is_numeric_dtype(frame[name]):
            continue
        values = []
        for value in frame[name]:
            try:
                values.append(np.nan if value is None or (isinstance(value, float) and np.isnan(value))
                              else parse_number(value) if name in SIZED else float(value))
            except ValueError:
                units = " (units K, M, B, T are read on sizes: 44M, 2B)" if name in SIZED else ""
                raise FitError(f"{path}: column '{name}': {value!r} is not a number{units}") from None
        frame[name] = np.asarray(values, dtype=float)
    return frame


def _check_sizes(data: pd.DataFrame) -> None:
    """Every size column holds finite values, model sizes positive, data and compute not negative."""
    for name, low, strict in (("params", 0.0, True), ("tokens", 0.0, False), ("flops", 0.0, False)):
        if name not in data.columns:
            continue
        values = data[name].to_numpy(float)
        bad = ~np.isfinite(values) | ((values <= low) if strict else (values < low))
        if bad.any():
            raise FitError(f"column '{name}': {values[bad][0]:g} is not a valid {name} count "
                           f"({'positive' if strict else 'zero or more'}, finite)")


def load_points(paths: list[str], columns: dict[str, str | None], console=None) -> pd.DataFrame:
    """One row per (run, evaluation point): method, params, tokens, compute, loss.

    Sizes (params, tokens, flops) may carry unit suffixes (K, M, B/G, T). Points of an lhopt run folder whose loss is
    not finite (diverged runs, lhopt's normal output) are dropped and counted (printed to
    `console`); in other tables they are refused. Raises FitError (one line) for a table without
    rows, a value that is not a number (naming its column), a size that is not positive, two
    `columns` roles naming one column (columns.loss=params)."""
    named = {}
    for role, source in columns.items():  # one column read as two quantities would fit nonsense
        if source and str(source).lower() in named:
            raise FitError(f"columns.{named[str(source).lower()]} and columns.{role} both name the column "
                           f"{source!r}: give each quantity its own column")
        if source:
            named[str(source).lower()] = role
    frames, dropped = [], 0
    for raw in paths:
        path = Path(raw)
        frame = _read(path)
        if frame.empty:
            raise FitError(f"{path}: no rows")
        if not path.is_dir():
            # headers as people write them: "Params", " tokens" match params and tokens
            wanted = {str(v).lower(): str(v) for v in [*columns.values(), *STORE_COLUMNS] if v}
            headers = _headers(path, frame)
            renamed = [wanted.get(str(c).strip().lower(), str(c).strip()) for c in headers]
            twice = next((name for name in renamed if renamed.count(name) > 1 and name in wanted.values()), None)
            if twice is not None:
                both = [str(c) for c, name in zip(headers, renamed) if name == twice]
                raise FitError(f"{path}: columns {' and '.join(repr(c) for c in both)} both read as {twice}: "
                               "keep one, or rename the other")
            frame = frame.rename(columns=dict(zip(frame.columns, renamed)))
            loss = columns.get("loss") or "loss"
            if loss not in frame.columns:
                raise FitError(f"{path}: missing column(s) {loss} (set columns.loss to name yours)")
            # the other columns are optional: compute needs flops, or params and tokens
            mapping = {source: target for target, source in columns.items() if source and source in frame.columns}
            frame = frame.rename(columns=mapping)
        frame = _numeric(frame, path)
        if path.is_dir():
            finite = np.isfinite(frame.loss.to_numpy(float))
            dropped += int((~finite).sum())
            frame = frame[finite]
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    if dropped and console is not None:
        console.print(f"dropped {dropped} points whose loss is not finite (diverged runs)")
    if "loss" not in data.columns:
        raise FitError("no loss column: set columns.loss")
    if "method" not in data.columns:
        data["method"] = "all"
    _check_sizes(data)
    has_flops = "flops" in data.columns and data.flops.notna().all() and (data.flops > 0).any()
    if not has_flops:
        if not {"params", "tokens"} <= set(data.columns):
            raise FitError("compute needs a flops column, or params and tokens columns (6 N D)")
        data["flops"] = 6.0 * data.params * data.tokens
    data = data[data.flops > 0]  # the initialisation point has no compute yet
    bad = (~np.isfinite(data.loss)) | (data.loss <= 0)
    if bad.any():
        raise FitError(f"{int(bad.sum())} loss values are NaN, infinite or not positive")
    if data.empty:
        raise FitError("no point with compute above 0 and a finite loss")
    data = data.drop(columns=["compute"], errors="ignore").rename(columns={"flops": "compute"})
    for method, group in data.groupby("method"):
        if len(group) < 5:
            raise FitError(f"method '{method}': {len(group)} points; at least 5 are needed")
        if "params" in group.columns and group.params.nunique() < 2:
            raise FitError(f"method '{method}': a single model size; scaling fits need at least 2")
    return data
