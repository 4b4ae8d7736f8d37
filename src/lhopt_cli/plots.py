"""matplotlib figures (written to files; no display needed)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def grid_heatmap(table: pd.DataFrame, title: str, path: Path) -> Path:
    """Final validation loss per (learning rate, schedule); the best cell boxed, gaps marked."""
    values = table.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(table.columns) + 2, 0.6 * len(table.index) + 1.8))
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="lightgray")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(table.index)), [f"{lr:g}" for lr in table.index])
    ax.set_xlabel("schedule")
    ax.set_ylabel("learning rate")
    best = np.unravel_index(np.nanargmin(values), values.shape) if np.isfinite(values).any() else None
    for (i, j), value in np.ndenumerate(values):
        label = f"{value:.3f}" if math.isfinite(value) else "div"
        red, green, blue, _ = cmap(image.norm(value)) if math.isfinite(value) else (1, 1, 1, 1)
        light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5  # dark text on light cells
        ax.text(j, i, label, ha="center", va="center", fontsize=8, color="black" if light else "white",
                fontweight="bold" if (i, j) == best else "normal")
    if best is not None:
        ax.add_patch(plt.Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    fig.colorbar(image, ax=ax, label="final validation loss")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
