"""Every training run on one torch thread, whatever the process, OMP_NUM_THREADS or the load.

A CPU kernel that splits a reduction over threads sums in another order, so the same run on 1
and on 2 threads differs in the last bits, and a policy's discrete decisions turn those bits into
different runs (docs/method.md, "The same command, the same numbers"). Parallelism in lhopt is
processes, each on `RUN_THREADS` threads; a run in the calling process gets the same count here.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch

RUN_THREADS = 1  # torch intra-op threads of every training run, data generation and policy update

F = TypeVar("F", bound=Callable)


@contextmanager
def run_threads(threads: int | None = None) -> Iterator[None]:
    """Run the body on `threads` torch threads (None: RUN_THREADS), then restore the caller's count."""
    threads = RUN_THREADS if threads is None else threads
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def on_run_threads(fn: F) -> F:
    """Decorate `fn` so that every call runs inside `run_threads()`."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with run_threads():
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
