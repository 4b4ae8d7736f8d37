"""The one writer of every file a command writes, and the one opener of the logs it appends to.

A whole file is written to a fresh temporary name in its own folder (`tempfile.mkstemp`: never a
name planted in advance), then renamed over its name: a reader never sees half a file, a link
planted at the name is replaced by the file rather than written through, and a failed write (a
full disk) leaves the old file whole and no temporary file behind. A log that grows line by line
(meta_train.csv, lhopt.log) is opened with O_NOFOLLOW, so a link planted at its name is refused
(OSError ELOOP) instead of followed.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, TextIO

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp makes 0600 files, the written file gets the usual 0644-style mode


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary_path)` and rename the result to `path` (returned). The temporary name
    ends in `path`'s suffix (writers that pick a format by suffix, as savefig, keep working).
    Raises FileNotFoundError (one line) where the folder does not exist, IsADirectoryError (one
    line naming `path`) where a folder, a device, a pipe or a socket stands at `path` (a link
    there is replaced, never written through), and whatever `write` or the rename raise, after
    removing the temporary file."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"its folder {path.parent} does not exist", str(path))
    if not path.is_symlink() and path.exists() and not path.is_file():  # the rename would replace it
        what = "a folder" if path.is_dir() else "something that is not a file (a device, a pipe or a socket)"
        raise IsADirectoryError(errno.EISDIR, f"{what} stands at its name; lhopt writes only files there", str(path))
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`text` (UTF-8) written to `path` by atomic_write."""
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def open_append(path: str | Path) -> TextIO:
    """`path` opened to append text (created if missing), never through a link at its name:
    raises OSError (errno ELOOP) for a link, so a caller refuses in one line."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a link stands at its name; remove it (lhopt never writes through links)",
                          str(path)) from None
        raise
    return os.fdopen(descriptor, "a", encoding="utf-8", newline="")


def header_only(path: str | Path) -> bool:
    """Whether `path` is a regular file (not a link) holding at most one non-empty line: a table's
    header without rows, what a run that failed before its first result leaves. Reads two lines
    at most."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    with path.open(errors="replace") as handle:
        return sum(1 for _, line in zip(range(2), handle) if line.strip()) <= 1


def not_a_regular_file(path: str | Path) -> str | None:
    """Why `path` cannot be read as a file's contents ('no such file', a folder, a device or a
    FIFO: what it is), or None for a regular file (or a link to one). Never opens it: a FIFO
    would block and /dev/zero never ends, so every reader of a path a user gives asks first."""
    import stat

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"no such file: {path}"
    except OSError as err:
        return f"{path}: {err.strerror or err}"
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a named pipe (FIFO)", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
    what = next((name for test, name in kinds.items() if test(mode)), "not a regular file")
    return f"{path} is {what}, not a file"


def file_in_the_way(folder: str | Path) -> Path | None:
    """The file standing at `folder` or at one of its parents (so the folder cannot be made), or
    None where every existing part of the path is a folder."""
    folder = Path(folder)
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
