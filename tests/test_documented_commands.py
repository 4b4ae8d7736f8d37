"""Every `lhopt` command the README and docs show composes as written: its keys exist, its values
lie in their ranges, its config groups have the choices named (checked with `--cfg job`, which
composes and validates the whole config and runs nothing). Commands with placeholders (FILE,
RUN_DIR, ...) are skipped; the scripts docs name are smoke-tested in test_scripts.py."""
from __future__ import annotations

import re
import shlex

import pytest

from conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "meta_training" / "README.md",
             REPO / "src" / "lhopt_cli" / "policies" / "README.md"]
COMMAND = r"lhopt (?:baseline-grid|train-policy|evaluate|scaling-fit)(?: [^`\n#|]*)?"
PLACEHOLDERS = ("...", "FILE", "RUN_DIR", "POLICY", "<", "[--", "X.pt", "OUT")


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text().replace("\\\n", " ")
        for command in re.findall(rf"`({COMMAND})`", text) + [
                line.strip() for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S)
                for line in re.findall(rf"(?:^|\s)({COMMAND})", block, flags=re.M)]:
            command = " ".join(command.split())
            if not any(p in command for p in PLACEHOLDERS) and (document.name, command) not in found:
                found.append((document.relative_to(REPO).as_posix(), command))
    return found


def first_of_sweep(override: str) -> str:
    """key=a,b,c -> key=a (a list's commas kept: seeds=[0],[1] -> seeds=[0])."""
    key, sep, value = override.partition("=")
    if not sep:
        return override
    depth, cut = 0, len(value)
    for i, char in enumerate(value):
        depth += (char in "[{(") - (char in "]})")
        if char == "," and depth == 0:
            cut = i
            break
    return f"{key}={value[:cut]}"


def test_the_docs_show_commands_for_every_subcommand():
    shown = {command.split()[1] for _, command in documented_commands()}
    assert shown == {"baseline-grid", "train-policy", "evaluate", "scaling-fit"}, shown


@pytest.mark.parametrize("document, command", documented_commands())
def test_a_documented_command_composes_as_written(run_cli, document, command):
    words = shlex.split(command)[1:]
    if "-m" in words or "--multirun" in words:  # a sweep: its first job's overrides, without the launcher's
        words = [first_of_sweep(w) for w in words if w not in ("-m", "--multirun") and not w.startswith("hydra")]
    result = run_cli(*words, "--cfg", "job")
    assert result.exit_code == 0, f"{document}: `{command}`: {result.output[-500:]} {result.exception}"
    assert f"command: {words[0]}" in result.output
