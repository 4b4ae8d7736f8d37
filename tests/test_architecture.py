"""The package's layout holds its architecture: the layers below the commands never see a
composed config nor import a command, and each command turns its config into a plan in one place
(docs/architecture.md)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lhopt_cli"
BELOW_COMMANDS = ("control", "inner", "tasks", "results", "scaling")
COMMAND_JOBS = ("train_policy", "baseline_grid", "evaluate", "scaling_fit")


def modules(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (PACKAGE / folder).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; relative imports resolved against its package)."""
    names, package = set(), ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def takes_a_composed_config(function: ast.FunctionDef) -> bool:
    arguments = function.args.posonlyargs + function.args.args + function.args.kwonlyargs
    return any(a.annotation is not None and "DictConfig" in ast.unparse(a.annotation) for a in arguments)


def config_takers(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and takes_a_composed_config(node)]


@pytest.mark.parametrize("path", modules(*BELOW_COMMANDS), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_layer_below_the_commands_imports_omegaconf_or_a_command(path):
    bad = sorted(name for name in imported(path)
                 if name.split(".")[0] in ("omegaconf", "hydra") or name.startswith("lhopt_cli.commands")
                 or name.startswith("lhopt_cli.config"))
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"
    assert not config_takers(path), f"{path.relative_to(PACKAGE)}: {config_takers(path)} take a DictConfig"


def test_the_loop_library_and_the_utilities_take_no_composed_config():
    takers = {str(p.relative_to(PACKAGE)): config_takers(p) for p in modules("loop", "support")}
    assert not any(takers.values()), {k: v for k, v in takers.items() if v}
    assert not any(name.startswith("lhopt_cli.commands") for p in modules("loop", "support", "config")
                   for name in imported(p)), "a lower wing imports a command"


@pytest.mark.parametrize("job", COMMAND_JOBS)
def test_each_command_builds_its_plan_in_one_function(job):
    path = PACKAGE / "commands" / f"{job}.py"
    takers = config_takers(path)
    assert "plan" in takers and len(takers) <= 2, takers  # the plan builder (and at most one helper of it)
    tree = ast.parse(path.read_text())
    run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run")
    assert ast.unparse(run.args.args[0].annotation).endswith("Plan"), "run() takes the plan"


def test_the_wings_hold_what_the_architecture_map_says():
    text = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    for folder in ("commands", "loop", "config", "support", *BELOW_COMMANDS):
        assert (PACKAGE / folder).is_dir(), folder
        assert f"{folder}/" in text, folder
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py"], top  # every module lives in a wing
