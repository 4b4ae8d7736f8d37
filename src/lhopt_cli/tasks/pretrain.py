"""Fine-tuning: a task whose network starts from weights pretrained on another split of data.

A kind that offers it defines `pretrain_batches()` (data the task itself never trains or validates
on: another corpus, freshly generated examples); `task.pretrain_steps > 0` then starts every run
from the weights AdamW reached after that many steps on it (lr 1e-3, cosine to 0, seed 0), the
way a user fine-tunes one released checkpoint. Every seed starts from the same weights; the seed
still fixes the data order. The weights are computed once per task configuration and cached under
the data cache (`$LHOPT_CACHE`); a cache file that does not load is computed again.
"""
from __future__ import annotations

import hashlib
import json
import math
from itertools import cycle, islice
from pathlib import Path

import torch

from lhopt_cli.tasks.data import cache_dir
from lhopt_cli.support.files import atomic_write
from lhopt_cli.support.threads import RUN_THREADS, on_run_threads

PRETRAIN_LR = 1e-3  # AdamW's default: what the checkpoint's author would have used
PRETRAIN_SEED = 0
# Keys that change how a run is observed, how long it trains or how the optimizer sees the
# weights (scale augmentation wraps the pretrained network), not the pretrained weights
_RUN_ONLY_KEYS = ("eval_points", "max_steps", "valid_size", "param_scale")


def pretrained_path(cfg: dict) -> Path:
    """The cache file of the pretrained weights of a task config (a dict)."""
    kept = {k: v for k, v in cfg.items() if k not in _RUN_ONLY_KEYS}
    kept["run_threads"] = RUN_THREADS  # weights pretrained before runs were held to one thread are not read
    digest = hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_dir() / f"pretrained_{cfg['name']}_{digest}.pt"


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing, truncated or not ours: computed again
        return None
    return state if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()) else None


@on_run_threads
def pretrained_state(task) -> dict[str, torch.Tensor]:
    """The state dict after `task.cfg.pretrain_steps` AdamW steps on `task.pretrain_batches()`
    (cycled), from the initialisation of seed 0; read from the cache when it is there."""
    cfg = {k: v for k, v in task.cfg.items()}
    path = pretrained_path(cfg)
    state = _load(path)
    if state is not None:
        return state
    steps = int(task.cfg.pretrain_steps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PRETRAIN_SEED)
        model = task.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
    model.train()
    for batch in islice(cycle(list(task.pretrain_batches())), steps):
        optimizer.zero_grad()
        task.loss(model, batch).backward()
        optimizer.step()
        schedule.step()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))  # concurrent workers each write a whole file; the last rename wins
    return state
