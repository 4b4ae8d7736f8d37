"""Terminal tables and CSV exports of results."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table


def best_cell(table: pd.DataFrame) -> tuple[float, str] | None:
    values = table.to_numpy(dtype=float)
    if not np.isfinite(values).any():
        return None
    i, j = np.unravel_index(np.nanargmin(values), values.shape)
    return table.index[i], table.columns[j]


def print_grid(table: pd.DataFrame, title: str, console: Console) -> None:
    """The lr x schedule table of final validation losses, best cell marked with '*'."""
    best = best_cell(table)
    shown = Table(title=title, caption="* best; div = diverged or failed in every seed")
    shown.add_column("lr", justify="right")
    for schedule in table.columns:
        shown.add_column(str(schedule), justify="right", overflow="fold", min_width=7)
    for lr, row in table.iterrows():
        cells = []
        for schedule, value in row.items():
            if not math.isfinite(value):
                cells.append("div")
            elif (lr, schedule) == best:
                cells.append(f"[bold green]*{value:.4f}[/bold green]")
            else:
                cells.append(f"{value:.4f}")
        shown.add_row(f"{lr:g}", *cells)
    console.print(shown)


def write_grid_csv(table: pd.DataFrame, path: Path) -> Path:
    out = table.copy()
    out.index.name = "lr"
    out.to_csv(path)
    return path
