"""Compose a command's config from conf/, validate it against its schema, make its run folder.

Every command uses Hydra's compose API (one job per call); the baseline grid's job function
takes the composed config only, so a `hydra.main` entry point can launch it as well.
"""
from __future__ import annotations

import datetime as _dt
import difflib
import json
import re
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from lhopt_cli.support.files import atomic_write, atomic_write_text, file_in_the_way, header_only
from lhopt_cli.config.schemas import COMMAND_SCHEMAS, TASK_SCHEMAS
from lhopt_cli.tasks.limits import TaskValueError, check_task_values


class ConfigError(ValueError):
    """A configuration problem, reported to the user as one line."""


def conf_dir() -> Path:
    """conf/ inside the installed package, or the repository's top-level conf/ (editable)."""
    packaged = Path(str(resources.files("lhopt_cli"))) / "conf"
    if packaged.is_dir():
        return packaged
    repo = Path(__file__).resolve().parents[3] / "conf"
    if repo.is_dir():
        return repo
    raise ConfigError("lhopt's conf/ folder is missing from this installation")


def known_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def config_groups_help(config_name: str) -> str:
    """The config groups conf/<config_name>.yaml composes, with each group's options and default,
    as the epilog of the command's --help (markdown)."""
    import yaml

    defaults = yaml.safe_load((conf_dir() / f"{config_name}.yaml").read_text()).get("defaults", [])
    lines = []
    for entry in defaults:
        if not isinstance(entry, dict):
            continue
        (group, default), = entry.items()
        options = ", ".join(f"**{o} (default)**" if o == default else o for o in command_options(group, config_name))
        lines.append(f"- `{group}=`: {options}" + ("" if default else " (none by default)"))
    return ("**Config groups** (`group=option`; `--cfg` prints the composed config, "
            "`key=value` sets any key in it):\n\n" + "\n".join(lines))


def _one_line(text: object) -> str:
    """Collapse a library's multi-line message; OmegaConf's trailing key dump is dropped."""
    return " ".join(str(text).split("full_key:")[0].split())


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose conf/<config_name>.yaml with Hydra overrides and validate the result."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    _check_group_choices(overrides, config_name)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        missing = re.match(r"Could not override '([^']+)'", str(err))
        if missing:  # Hydra suggests `+key=value`, which only adds a key no command reads
            raise ConfigError(f"unknown key '{missing[1]}'{_nearest_key(config_name, missing[1])}") from None
        hint = (" (quote a value with spaces or non-ASCII characters: key='value')"
                if "LexerNoViableAlt" in str(err) or "token recognition" in str(err) else "")
        raise ConfigError(_one_line(err) + hint) from None
    finally:
        GlobalHydra.instance().clear()
    return validate(cfg)


def _schema_keys(node, prefix: str = "") -> list[str]:
    """Every dotted key of a structured config (sections left at None add only their own name)."""
    keys = []
    for key in node.keys():
        path = f"{prefix}{key}"
        keys.append(path)
        child = node._get_node(key)
        if OmegaConf.is_dict(child) and not child._is_none():
            keys += _schema_keys(child, path + ".")
    return keys


def _nearest_key(config_name: str, key: str) -> str:
    """'; did you mean grid.lrs?' for the closest key of the command's schema, else ''."""
    schema = COMMAND_SCHEMAS.get(config_name.replace("_", "-"))
    if schema is None:
        return ""
    known = _schema_keys(OmegaConf.structured(schema))
    group, _, rest = key.partition(".")
    if key in known and rest and (conf_dir() / group).is_dir():  # a key only some choices of its group set
        having = [option for option in known_options(group)
                  if OmegaConf.select(OmegaConf.load(conf_dir() / group / f"{option}.yaml"), rest) is not None]
        if having:
            return f": it is a setting of {' or '.join(f'{group}={o}' for o in having)}; choose it first"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close and close[0] != key else "; `--cfg` prints every key"


def debug_overrides(debug: DictConfig | dict | None) -> list[str]:
    """Overrides that carry a job's debug values (debug=smoke and any explicit debug.KEY) into
    another config it composes; [] when the job has no debug values."""
    if debug is None:
        return []
    values = OmegaConf.to_container(debug, resolve=True) if isinstance(debug, DictConfig) else debug
    return ["debug=smoke", *(f"debug.{k}={json.dumps(v)}" for k, v in values.items() if v is not None)]


def command_options(group: str, config_name: str) -> list[str]:
    """The options of `group` that fit the command: for `experiment` (files setting keys of
    any command), those whose keys all belong to the command's schema; every option otherwise."""
    options = known_options(group)
    schema = COMMAND_SCHEMAS.get(config_name.replace("_", "-"))
    if group != "experiment" or schema is None:
        return options
    import yaml

    known = {key.split(".")[0] for key in _schema_keys(OmegaConf.structured(schema))}
    fits = []
    for option in options:
        keys = set(yaml.safe_load((conf_dir() / group / f"{option}.yaml").read_text()) or {}) - {"defaults"}
        if keys <= known:
            fits.append(option)
    return fits


def _check_group_choices(overrides: list[str], config_name: str = "") -> None:
    """Name the known options when a config group choice does not exist, or is another command's."""
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if not sep or "." in key or not (conf_dir() / key).is_dir() or value in ("null", ""):
            continue
        options = known_options(key)
        if value not in options:
            raise ConfigError(f"unknown {key} '{value}'; known: {', '.join(options)}")
        mine = command_options(key, config_name) if config_name else options
        if value not in mine:
            command = config_name.replace("_", "-")
            raise ConfigError(f"{key}={value} sets keys `lhopt {command}` does not have (another command's "
                              f"{key}); {command}'s: {', '.join(mine) or 'none'}")


def _merge_schema(schema: type, cfg: DictConfig, prefix: str = "") -> DictConfig:
    """cfg merged into a structured schema; a wrong key or type becomes one ConfigError line.
    One value where the schema wants a list (`tasks=mlp_digits`) is read as a list of one."""
    for _ in range(64):
        try:
            return OmegaConf.merge(OmegaConf.structured(schema), cfg)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None)
            if key and "is not a ListConfig" in str(err):
                value = OmegaConf.select(cfg, key, throw_on_missing=False)
                if value is not None and not OmegaConf.is_config(value):
                    with open_dict(cfg):
                        OmegaConf.update(cfg, key, [value], merge=False)
                    continue
            msg = _one_line(getattr(err, "msg", err))
            raise ConfigError(f"invalid config at '{prefix}{key}': {msg}" if key else f"invalid config: {msg}") from None
    raise ConfigError("invalid config: too many values given where lists are expected")


def validate(cfg: DictConfig) -> DictConfig:
    """Merge into the command's structured schema: wrong keys and types fail with one line."""
    command = cfg.get("command")
    if command not in COMMAND_SCHEMAS:
        raise ConfigError(f"unknown command '{command}'; known: {', '.join(COMMAND_SCHEMAS)}")
    merged = _merge_schema(COMMAND_SCHEMAS[command], cfg)
    if "task" in cfg and cfg.task is not None:
        merged.task = validate_task(cfg.task)
    check_values(merged)
    OmegaConf.set_struct(merged, True)
    return merged


def check_values(cfg: DictConfig) -> None:
    """Values the schema's types let through but no run can use, refused before anything runs
    (ConfigError, one line): every number outside its key's range (ranges.py: learning rates,
    betas, seeds, sizes, PPO's coefficients, scaling-fit's target and bootstrap, ...), a char_lm
    text file that cannot fill a batch, an empty or unknown task list."""
    from lhopt_cli.config.ranges import RangeError, check_ranges

    try:
        check_ranges(cfg)
    except RangeError as err:
        raise ConfigError(str(err)) from None
    task = cfg.get("task")
    if task is not None and task.get("name") in ("char_lm", "char_lm_finetune") and task.get("text_path"):
        _check_text_file(task)
    if cfg.get("command") == "evaluate" and cfg.get("tasks") is not None:
        if len(cfg.tasks) == 0:
            raise ConfigError("tasks=[] names no task; give task names (tasks=[mlp_mnist]) or suite=test / suite=validation")
        unknown = [t for t in cfg.tasks if str(t) not in known_options("task")]
        if unknown:
            raise ConfigError(f"unknown task '{unknown[0]}'; known: {', '.join(known_options('task'))}")


def validate_task(task_cfg: DictConfig) -> DictConfig:
    name = task_cfg.get("name")
    if name not in TASK_SCHEMAS:
        raise ConfigError(f"unknown task '{name}'; known: {', '.join(sorted(TASK_SCHEMAS))}")
    merged = _merge_schema(TASK_SCHEMAS[name], task_cfg, prefix="task.")
    try:
        check_task_values(merged)
    except TaskValueError as err:
        raise ConfigError(str(err)) from None
    return merged


def _run_dir_path(cfg: DictConfig) -> Path:
    if cfg.run_dir:
        return Path(cfg.run_dir)
    return Path("outputs") / cfg.command / _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def _writable(action, run_dir: Path):
    """Run a file-system action; OSError becomes one ConfigError line naming the folder (and,
    where a file stands at its path or above it, saying so)."""
    try:
        return action()
    except OSError as err:
        blocker = file_in_the_way(run_dir)
        if blocker is not None:
            raise ConfigError(f"run_dir {run_dir}: {blocker} is a file, not a folder ({err.strerror or err})") from None
        where = f" ({err.filename})" if err.filename and str(err.filename) != str(run_dir) else ""
        raise ConfigError(f"run_dir {run_dir}: {err.strerror or err}{where}") from None


def make_run_dir(cfg: DictConfig) -> Path:
    """The run folder (run_dir, or outputs/<command>/<timestamp>), with config.yaml saved in it.
    Raises ConfigError (one line) where the file system refuses (a file in the way, a read-only
    or full disk). For in-process use; the CLI holds the folder's lock with `run_folder`."""
    run_dir = _run_dir_path(cfg)
    _writable(lambda: run_dir.mkdir(parents=True, exist_ok=True), run_dir)
    _writable(lambda: atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg)), run_dir)
    return run_dir


@contextmanager
def run_folder(cfg: DictConfig, check: Callable[[Path], None] | None = None, overrides: list[str] | None = None):
    """The command's run folder, held for the body: created, locked against a second command
    (results/locks.py; FolderBusy names the holder), `check(run_dir)` run (it may refuse, with
    nothing written yet), then config.yaml saved and, given `overrides` (the command line as
    typed), overrides.yaml (Hydra's record of what made a run). File-system refusals are one
    ConfigError line. A command that fails before it records a result leaves the folder as it
    found it (a folder it created goes again)."""
    from lhopt_cli.results.locks import HOLDER_NAME, LOCK_NAME, FolderBusy, folder_lock

    run_dir = _run_dir_path(cfg)
    # the folders this command creates, innermost first (run_dir and any missing parents)
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    # a refusal removes only the lock files it added and puts back an earlier command's holder record
    lock_file, holder = run_dir / LOCK_NAME, run_dir / HOLDER_NAME
    had_lock = lock_file.exists()
    held_record = holder.read_bytes() if holder.is_file() else None
    # the set-up records an earlier command left: a refusal puts them back as they were
    earlier = {name: _bytes_or_none(run_dir / name) for name in ("config.yaml", "overrides.yaml")}
    _writable(lambda: run_dir.mkdir(parents=True, exist_ok=True), run_dir)
    lock, locked, refused = folder_lock(run_dir, f"lhopt {cfg.command}"), False, False
    try:
        try:
            _writable(lock.__enter__, run_dir)
            locked = True
        except FolderBusy as err:
            raise ConfigError(str(err)) from None
        _refuse_another_commands(run_dir, str(cfg.command))
        blocked = next((run_dir / name for name in OUTPUT_FILES
                        if not (run_dir / name).is_symlink() and (run_dir / name).exists()
                        and not (run_dir / name).is_file()), None)
        if blocked is not None:  # found now, not after the work: the rename at the end would fail
            raise ConfigError(f"{blocked}: a folder (or something that is not a file) stands where this command "
                              "writes a file; remove it or give another run_dir")
        planted = next((run_dir / name for name in OWN_FOLDERS if (run_dir / name).is_symlink()), None)
        if planted is not None:  # lhopt never writes through a link planted in its folder
            raise ConfigError(f"{planted}: a link stands at the run folder's {planted.name}; remove it (lhopt writes "
                              "only into folders of its own)")
        if check is not None:
            check(run_dir)
        _writable(lambda: atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg)), run_dir)
        if overrides is not None:
            _writable(lambda: atomic_write_text(run_dir / "overrides.yaml", OmegaConf.to_yaml(list(overrides))),
                      run_dir)
        yield run_dir
    except BaseException:
        # a command refused or failed before it recorded anything (a check, a full disk, a lock
        # held elsewhere, an error) leaves no folder or lock file of its own: it removes the lock
        # files it added, puts back an earlier command's holder record, and removes a folder it
        # created that holds set-up files only
        refused = True
        raise
    finally:
        if locked:
            lock.__exit__(None, None, None)
        if refused:
            with suppress(OSError):
                if not had_lock:
                    lock_file.unlink(missing_ok=True)
                if held_record is None:
                    holder.unlink(missing_ok=True)
                else:
                    atomic_write(holder, lambda temporary: temporary.write_bytes(held_record))
                if run_dir not in created:
                    for name, data in earlier.items():
                        if data is None:
                            (run_dir / name).unlink(missing_ok=True)
                        elif _bytes_or_none(run_dir / name) != data:
                            atomic_write(run_dir / name, lambda temporary, data=data: temporary.write_bytes(data))
                if run_dir in created and _only_set_up_files(run_dir):
                    for entry in run_dir.iterdir():
                        entry.rmdir() if entry.is_dir() else entry.unlink()
            with suppress(OSError):  # stops at the first folder something else has written into
                for folder in created:
                    folder.rmdir()


def _bytes_or_none(path: Path) -> bytes | None:
    """A regular file's bytes (links not followed), else None."""
    try:
        return path.read_bytes() if path.is_file() and not path.is_symlink() else None
    except OSError:
        return None


def _refuse_another_commands(run_dir: Path, command: str) -> None:
    """ConfigError (one line) where `run_dir` holds another command's run (its config.yaml names
    that command): one folder's files would mix the two. A config.yaml that does not read as a
    command's is left to the command's own checks."""
    recorded = run_dir / "config.yaml"
    if not recorded.is_file() or recorded.is_symlink():
        return
    try:
        owner = OmegaConf.load(recorded).get("command")
    except Exception:  # noqa: BLE001  (not a command's config: nothing to compare)
        return
    if isinstance(owner, str) and owner and owner != command:
        raise ConfigError(f"{run_dir} holds a `lhopt {owner}` run (its config.yaml); give this {command} "
                          "another run_dir")


# The folders commands write into inside a run folder (evaluate's grid, train-policy's validation
# grids, kept passes and TensorBoard events, a multirun's shards)
OWN_FOLDERS = ("grid", "validation_grid", "passes", "tensorboard", "shards")

# The files commands write into a run folder (a folder standing at one of these names is refused up front)
OUTPUT_FILES = ("config.yaml", "overrides.yaml", "lhopt.log", "policy.json", "results.parquet", "runs.parquet",
                "summary.csv", "grid_table.csv", "grid_heatmap.png", "fits.csv", "fits.json", "scaling_frontier.png",
                "parametric_fit.png", "meta_train.csv", "checkpoint.pt", "best.pt", "policy.pt", "meta_training.png")

# What a command writes into its run folder before any result: removed again when it fails there
SET_UP_FILES = ("config.yaml", "overrides.yaml", "lhopt.log", "policy.json", ".lhopt.lock", ".lhopt.lock.json")


def _only_set_up_files(run_dir: Path) -> bool:
    """Whether `run_dir` holds nothing but SET_UP_FILES, a meta-training log with its header alone
    (a run that failed before its first iteration), and empty folders."""
    def set_up(entry: Path) -> bool:
        if entry.is_symlink():
            return False
        if entry.is_dir():
            return not any(entry.iterdir())
        if entry.name == "meta_train.csv":
            return header_only(entry)
        return entry.name in SET_UP_FILES and entry.is_file()

    try:
        return all(set_up(entry) for entry in run_dir.iterdir())
    except OSError:
        return False


def _check_text_file(task: DictConfig) -> None:
    """A char_lm text file that exists and fills a batch, checked before a run folder is made."""
    from lhopt_cli.tasks.data import DataUnavailable
    from lhopt_cli.tasks.text_lm import check_text_size

    path = Path(str(task.text_path)).expanduser()
    from lhopt_cli.tasks.data import not_a_text_file

    reason = not_a_text_file(path)
    if reason:
        raise ConfigError(f"task.text_path: {reason}")
    try:
        check_text_size(min(path.stat().st_size, int(task.max_chars)), int(task.context), int(task.batch_size), str(path))
    except DataUnavailable as err:
        raise ConfigError(str(err)) from None
