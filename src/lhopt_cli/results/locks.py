"""One command at a time per run folder: an exclusive file lock (filelock) on `.lhopt.lock`.

Two commands writing one folder's tables at once would each rewrite them from their own copy
(the last writer wins), and two meta-training runs would log every iteration twice. So a
command holds its folder's lock from before it writes config.yaml until it ends; a second
command on the same folder is refused in one line that names the holder (from
`.lhopt.lock.json`). The operating system drops the lock with the holder's process, so a
holder killed with -9 leaves nothing that blocks the next command. A Hydra multirun's jobs
write their own shards of a folder (results/store.py) and do not take the lock.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from lhopt_cli.support.files import atomic_write_text

LOCK_NAME = ".lhopt.lock"
HOLDER_NAME = ".lhopt.lock.json"


class FolderBusy(RuntimeError):
    """The run folder is held by another command (one line naming it)."""


def _holder(run_dir: Path) -> str:
    try:
        info = json.loads((run_dir / HOLDER_NAME).read_text())
        return (f"`{info['command']}` (pid {info['pid']} on {info['host']}, since {info['since']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another lhopt command"


@contextmanager
def folder_lock(run_dir: Path, command: str):
    """Hold `run_dir`'s lock for the body; raises FolderBusy at once if another process holds it."""
    lock = FileLock(str(Path(run_dir) / LOCK_NAME), timeout=0, is_singleton=False)
    try:
        lock.acquire()
    except Timeout:
        raise FolderBusy(f"{run_dir} is in use by {_holder(Path(run_dir))}: wait for it to end or "
                         "use another run_dir") from None
    try:
        info = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                "since": _dt.datetime.now().isoformat(timespec="seconds"), "argv": sys.argv}
        # a rename replaces a planted symlink instead of writing through it
        atomic_write_text(Path(run_dir) / HOLDER_NAME, json.dumps(info) + "\n")
        yield
    finally:
        lock.release()
