"""Progress in a pipe or a log file: plain lines as the work goes, not one bar at the end."""
from __future__ import annotations

import io
import subprocess

from rich.console import Console

from conftest import LHOPT, lhopt_env
from lhopt_cli.support.progress import PlainProgress, progress_bar


def test_without_a_terminal_progress_is_plain_lines_at_each_tenth_and_the_end():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=160)
    with progress_bar(console) as bar:
        assert isinstance(bar, PlainProgress)
        job = bar.add_task("refits", total=50)
        for _ in range(50):
            bar.advance(job)
    lines = out.getvalue().splitlines()
    assert lines[0] == "refits: 0/50 (0%), 0 s" and lines[-1].startswith("refits: 50/50 (100%)")
    assert len(lines) == 11  # the start and each tenth (the last at the end), nothing twice


def test_a_piped_command_prints_its_progress_as_it_goes(tmp_path):
    proc = subprocess.run([str(LHOPT), "baseline-grid", "debug=smoke", "task=nqm", "executor.workers=1",
                           f"run_dir={tmp_path / 'grid'}"], capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    first, last = lines.index("nqm grid: 0/35 (0%), 0 s"), next(i for i, l in enumerate(lines) if l.startswith("nqm grid: 35/35"))
    assert first < last < next(i for i, l in enumerate(lines) if l.startswith("best: lr="))
