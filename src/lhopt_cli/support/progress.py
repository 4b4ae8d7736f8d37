"""Progress of long commands: rich's bar on a terminal, plain lines in a pipe or a log file.

Without a terminal rich draws nothing until the bar stops, so a log watched with `tail -f`
showed nothing for minutes. There, `PlainProgress` prints one line when a step starts, then at
most one every PLAIN_EVERY_S seconds (and at every tenth of the way), and one at the end.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_EVERY_S = 30.0


def progress_bar(console: Console):
    """A context manager with rich Progress's add_task / advance / update: the bar on a
    terminal, PlainProgress's lines otherwise."""
    if not console.is_terminal:
        return PlainProgress(console)
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
    )


@dataclass
class _Task:
    description: str
    total: float
    completed: float
    started: float
    said_at: float
    said_tenth: int


class PlainProgress:
    """Progress as plain lines: "meta-training: 5/50 (10%), 83 s, eta 747 s"."""

    def __init__(self, console: Console, every_s: float = PLAIN_EVERY_S):
        self.console, self.every_s, self.tasks = console, every_s, []

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        for task in self.tasks:
            if task.completed < task.total and exc[0] is None:
                self._say(task)

    def add_task(self, description: str, total: float, completed: float = 0) -> int:
        now = time.perf_counter()
        self.tasks.append(_Task(description, float(total), float(completed), now, now, self._tenth(completed, total)))
        self._say(self.tasks[-1])
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, completed: float | None = None, advance: float | None = None,
               description: str | None = None) -> None:
        task = self.tasks[task_id]
        if completed is not None:
            task.completed = float(completed)
        if advance is not None:
            task.completed += float(advance)
        if description is not None:
            task.description = description
        now, tenth = time.perf_counter(), self._tenth(task.completed, task.total)
        if task.completed >= task.total or tenth > task.said_tenth or now - task.said_at >= self.every_s:
            self._say(task)

    @staticmethod
    def _tenth(completed: float, total: float) -> int:
        return int(10 * completed / total) if total > 0 else 10

    def _say(self, task: _Task) -> None:
        now = time.perf_counter()
        elapsed = now - task.started
        share = task.completed / task.total if task.total > 0 else 1.0
        eta = f", eta {elapsed / share * (1 - share):.0f} s" if 0 < share < 1 else ""
        self.console.print(f"{task.description}: {task.completed:g}/{task.total:g} ({share:.0%}), {elapsed:.0f} s{eta}",
                           highlight=False, markup=False)
        task.said_at, task.said_tenth = now, self._tenth(task.completed, task.total)
