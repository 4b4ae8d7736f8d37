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
    """Final validation losses, a schedule per row and a learning rate per column (fits 80
    columns), the best cell marked with '*'."""
    best = best_cell(table)
    shown = Table(title=title, caption="* best; div = diverged or failed in every seed")
    shown.add_column("schedule \\ lr")
    for lr in table.index:
        shown.add_column(f"{lr:g}", justify="right")
    for schedule in table.columns:
        cells = []
        for lr, value in table[schedule].items():
            if not math.isfinite(value):
                cells.append("div")
            elif (lr, schedule) == best:
                cells.append(f"[bold green]*{value:.4f}[/bold green]")
            else:
                cells.append(f"{value:.4f}")
        shown.add_row(str(schedule), *cells)
    console.print(shown)


def write_grid_csv(table: pd.DataFrame, path: Path) -> Path:
    from lhopt_cli.support.files import atomic_write_text

    out = table.copy()
    out.index.name = "lr"
    atomic_write_text(Path(path), out.to_csv())  # a rename: a planted symlink is replaced, not written through
    return path
