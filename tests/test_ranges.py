"""Every number of every command's config has a range (ranges.py), and each range is enforced:
a value outside it is refused in one line naming the key before anything runs."""
from __future__ import annotations

import math
import re
import typing
from dataclasses import fields, is_dataclass

import pytest

from lhopt_cli.config.compose import ConfigError, compose
from lhopt_cli.config.ranges import VALUE_RANGES, Range
from lhopt_cli.config.schemas import COMMAND_SCHEMAS

CONFIG_NAMES = {"baseline-grid": "baseline_grid", "train-policy": "train_policy", "evaluate": "evaluate",
                "scaling-fit": "scaling_fit"}


def numeric_keys(schema, prefix: str = "") -> set[str]:
    """The dotted keys of `schema` typed int, float or a list of them (Optional or not)."""
    keys, hints = set(), typing.get_type_hints(schema)
    for f in fields(schema):
        kind = hints[f.name]
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        base = inner[0] if typing.get_origin(kind) is typing.Union and inner else kind
        element = typing.get_args(base)[0] if typing.get_origin(base) is list and typing.get_args(base) else None
        if is_dataclass(base):
            keys |= numeric_keys(base, f"{prefix}{f.name}.")
        elif base in (int, float) or element in (int, float):
            keys.add(prefix + f.name)
    return keys


def test_every_number_of_every_command_schema_has_a_range():
    every = set().union(*(numeric_keys(schema) for schema in COMMAND_SCHEMAS.values()))
    assert len(every) > 50
    assert sorted(every - set(VALUE_RANGES)) == []
    assert sorted(set(VALUE_RANGES) - every) == []  # and the table names no key that does not exist


def outside(allowed: Range) -> float:
    if allowed.low == -math.inf:
        return math.nan
    return allowed.low - 1 if allowed.closed_low else allowed.low


def override(key: str, value: float) -> list[str]:
    shown = "nan" if math.isnan(value) else (str(int(value)) if float(value).is_integer() else repr(value))
    if key in ("seeds", "validation.seeds", "controller.decisions", "debug.decisions") or key.endswith("lrs"):
        shown = f"[{shown}]"
    if key == "fixed_default.lr":
        return [f"fixed_default={{lr: {shown}, schedule: linear}}"]
    extra = {"debug": ["debug=smoke"], "suite": ["suite=test"]}.get(key.split(".")[0], [])
    if key in ("executor.max_restarts", "executor.num_cpus"):  # settings of executor=ray only
        extra = ["executor=ray"]
    return [*extra, f"{key}={shown}"]


@pytest.mark.parametrize("key", sorted(VALUE_RANGES))
def test_a_value_outside_its_range_is_refused_in_one_line_naming_the_key(key):
    command = next(c for c, schema in COMMAND_SCHEMAS.items() if key in numeric_keys(schema))
    bad = outside(VALUE_RANGES[key])
    with pytest.raises(ConfigError) as refused:
        compose(CONFIG_NAMES[command], override(key, bad))
    message = str(refused.value)
    assert message.startswith(f"{key} must ") and "\n" not in message, message


def test_the_edges_of_a_range():
    assert Range(0, 1).holds(0) and not Range(0, 1).holds(1) and not Range(0, 1).holds(math.nan)
    assert Range(0, 1, False, True).holds(1) and not Range(0, 1, False, True).holds(0)
    assert not Range(0, closed_low=False).holds(math.inf)
    cfg = compose("baseline_grid", ["seeds=[0,4294967295]", "grid.beta1=0", "grid.eps=1"])
    assert list(cfg.seeds) == [0, 2**32 - 1]
    with pytest.raises(ConfigError, match=r"seeds must lie in \[0, 2\^32\) \(got 4294967296\)"):
        compose("baseline_grid", ["seeds=[4294967296]"])


def test_a_key_only_another_choice_of_its_group_sets_names_that_choice():
    with pytest.raises(ConfigError, match=r"unknown key 'executor.max_restarts': it is a setting of executor=ray"):
        compose("train_policy", ["executor.max_restarts=2"])


@pytest.mark.parametrize("config, override, message", [
    ("baseline_grid", "seeds=[0,0]", "seeds lists 0 twice; give each once"),
    ("evaluate", "extended_lrs=[0.1,0.1]", "extended_lrs lists 0.1 twice"),
    ("scaling_fit", "bootstrap=100000000", "bootstrap must lie in [10, 100000] (got 100000000)"),
])
def test_repeated_values_and_endless_bootstraps_are_refused(config, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        compose(config, [override])
