"""The README's library examples run as written, with the bundled policy."""
import re
import subprocess
import sys

from conftest import REPO


def test_readme_example_runs():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no python example"
    proc = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"final loss \d+\.\d+, lr now \S+, 64 decisions", proc.stdout), proc.stdout


def test_readme_param_groups_mixed_precision_and_resume_example_runs(tmp_path):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2, "README.md lost its second python example"
    proc = subprocess.run([sys.executable, "-c", blocks[1]], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"64 decisions; weight decay \S+ and 0\.0$", proc.stdout.strip()), proc.stdout
    assert (tmp_path / "checkpoint.pt").is_file()


def test_readme_lightning_and_hugging_face_examples_run(tmp_path):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4, "README.md lost its framework examples"
    for block, expected in ((blocks[2], "lightning: 64 decisions"), (blocks[3], "hf: 64 decisions")):
        proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert expected in proc.stdout, proc.stdout[-2000:]


def test_readme_replay_example_runs(tmp_path):
    text = (REPO / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "ReplaySchedule" in b]
    assert blocks, "README.md lost its replay example"
    proc = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"replayed: final loss \d+\.\d+, lr at the end \S+", proc.stdout), proc.stdout
    assert (tmp_path / "schedule.json").is_file()
