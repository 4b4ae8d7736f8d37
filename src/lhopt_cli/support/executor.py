"""Local parallelism: worker processes with one torch thread each, results as they finish."""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Iterator, Sequence, TypeVar

J = TypeVar("J")
R = TypeVar("R")


def resolve_workers(requested: int, jobs: int) -> int:
    """0 means one worker per CPU core; never more workers than jobs."""
    workers = requested if requested > 0 else (os.cpu_count() or 1)
    return max(1, min(workers, jobs))


def end_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """In a worker process: exit once the parent (`parent`, its pid, as the parent passed it: a
    parent killed while this worker still imports would otherwise go unseen) is gone, so a kill -9
    leaves no orphan running for minutes with its memory; a daemon thread notices within `poll_s`."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="lhopt-end-with-parent", daemon=True).start()


def _init_worker(parent: int) -> None:
    import signal

    end_with_parent(parent)  # first: torch's import takes seconds
    import torch

    from lhopt_cli.support.threads import RUN_THREADS

    torch.set_num_threads(RUN_THREADS)  # processes, not threads, share the cores
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def run_jobs(fn: Callable[[J], R], jobs: Sequence[J], workers: int) -> Iterator[tuple[J, R]]:
    """Yield (job, fn(job)) in completion order; workers == 1 runs in this process.

    Jobs are submitted a few at a time so that an interrupted run leaves little in flight.
    """
    if workers <= 1:
        for job in jobs:
            yield job, fn(job)
        return
    pending = list(reversed(jobs))
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(os.getpid(),))
    try:
        running = {}
        while pending or running:
            while pending and len(running) < 2 * workers:
                job = pending.pop()
                running[pool.submit(fn, job)] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield running.pop(future), future.result()
    except BaseException:  # interrupted: stop the workers now, not after their current jobs
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
