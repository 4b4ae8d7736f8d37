"""The README's library example runs as written, with the bundled policy."""
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
