"""The README's library examples run as written, with the bundled policy."""
import re
import subprocess
import sys

from conftest import REPO


def _blocks() -> list[str]:
    """The README's python examples after the first screen's (LhoptAdamW), in order."""
    text = (REPO / "README.md").read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "LhoptAdamW(" not in b]


def test_readme_first_screen_example_runs_without_a_word_from_the_controller():
    text = (REPO / "README.md").read_text()
    first = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    assert "LhoptAdamW(" in first and text.index(first) < 4000  # on the first screen
    proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", first], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"validation loss (\d+\.\d+), (\d+) decisions", proc.stdout)
    assert found and int(found.group(2)) == 64, proc.stdout
    assert float(found.group(1)) < 0.4  # it learns (AdamW at its defaults in the same loop: 0.497)


def test_readme_example_runs():
    blocks = _blocks()
    assert blocks, "README.md has no python example"
    proc = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"final loss \d+\.\d+, lr now \S+, 64 decisions", proc.stdout), proc.stdout


def test_readme_param_groups_mixed_precision_and_resume_example_runs(tmp_path):
    blocks = _blocks()
    assert len(blocks) >= 2, "README.md lost its second python example"
    proc = subprocess.run([sys.executable, "-c", blocks[1]], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"64 decisions; weight decay \S+ and 0\.0$", proc.stdout.strip()), proc.stdout
    assert (tmp_path / "checkpoint.pt").is_file()


def test_readme_lightning_and_hugging_face_examples_run(tmp_path):
    blocks = _blocks()
    assert len(blocks) >= 4, "README.md lost its framework examples"
    for block, expected in ((blocks[2], "lightning: 64 decisions"), (blocks[3], "hf: 64 decisions")):
        # as written, each validates where the policy expects it (step 0 included: Lightning's sanity check,
        # the Trainer's eval_on_start), with weight decay to set: no UserWarning of lhopt's or the framework's
        proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", block], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert expected in proc.stdout, proc.stdout[-2000:]
        assert "ControllerMisuseWarning" not in proc.stderr, proc.stderr[-2000:]


def test_readme_replay_example_runs(tmp_path):
    blocks = [b for b in _blocks() if "ReplaySchedule" in b]
    assert blocks, "README.md lost its replay example"
    # as written, the loop gives the controller no cause for a ControllerMisuseWarning
    proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", blocks[0]], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"replayed: final loss \d+\.\d+, lr at the end \S+", proc.stdout), proc.stdout
    assert (tmp_path / "schedule.json").is_file()
