"""Checkpoint selection on the validation suite, during meta-training.

Every `validation.every` PPO iterations, `lhopt train-policy` runs the current policy greedily
on each member of the validation suite (conf/suite/validation.yaml: instances of the training
family with their own seeds, never trained on) and scores it by the median, over members, of the
median speedup over seeds against the best of the paper's 5 x 7 AdamW grid (results/speedup.py,
the same numbers `lhopt evaluate suite=validation` reports). The test suite is refused here:
nothing in training or selection may read it.

The grids come from the stored reference grids (benchmarks/grids/<suite>/, made by
scripts/suites/make_reference_grids.py), read only; runs missing there (other seeds, debug sizes) are
computed once into the run folder's own grid store.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from lhopt_cli.commands import baseline_grid
from lhopt_cli.config.compose import ConfigError, compose, debug_overrides
from lhopt_cli.control.policy import RecurrentActorCritic
from lhopt_cli.control.protocol import ObservationProtocol
from lhopt_cli.control.rollout import run_policy
from lhopt_cli.commands.evaluate import grid_request, member_grid, summarize
from lhopt_cli.config.schemas import ValidationConfig
from lhopt_cli.results.suite_grid import TEST_SUITES


@dataclass
class _Member:
    id: str
    task_cfg: dict
    grid_curves: pd.DataFrame  # the paper grid's curves of this member, every seed


def refuse_test_suite(suite: str) -> None:
    """ConfigError (one line) for a test suite named as the validation suite."""
    if suite in TEST_SUITES:
        raise ConfigError(f"validation.suite={suite}: the test suite is only reported on; select on validation_heldout (or validation)")


def refuse_test_tasks(suite: str, members: list[dict]) -> None:
    """ConfigError if any member is a task of a test suite: selection never reads it."""
    test_tasks = {m["task"] for name in TEST_SUITES
                  for m in OmegaConf.to_container(compose("evaluate", [f"suite={name}"]).suite.members)}
    leaked = sorted({m["task"] for m in members} & test_tasks)
    if leaked:
        raise ConfigError(f"validation.suite={suite} holds test-suite tasks ({', '.join(leaked)}): "
                          "selection never reads the test suite")


class ValidationSuite:
    """The validation members with their AdamW grids, ready to score policies.

    Args:
        suite: a conf/suite/ name; `test`, a suite holding any of the test suite's tasks, and a suite
            without members are refused (ConfigError).
        seeds: the seeds each member runs with (the grid's seeds too).
        protocol: the observation protocol of the policies scored (validation points, decisions).
        grid_dir: where missing grid runs are computed (the stored grids are only read).
        debug: the debug values of the job (`debug=smoke` sizes; a dict or DictConfig), or None.
        stored: the stored grids' folder (default: benchmarks/grids/<suite> of a source checkout).
    """

    def __init__(self, suite: str, seeds: list[int], protocol: ObservationProtocol, grid_dir: Path,
                 debug: dict | None = None, stored: Path | None = None, console: Console | None = None):
        console = console or Console(soft_wrap=True)
        cfg = self.suite_config(suite, seeds, debug)
        self.seeds, self.protocol = list(seeds), protocol
        self.paper_lrs = list(cfg.grid.lrs)
        stored = Path(stored) if stored is not None else baseline_grid.STORED_GRIDS / suite
        self.members: list[_Member] = []
        request = grid_request(cfg)
        for member in OmegaConf.to_container(cfg.suite.members, resolve=True):
            grid = member_grid(request, member, protocol)
            curves = baseline_grid.curves_reusing(grid, grid_dir, stored, console)
            self.members.append(_Member(member["id"], json.loads(grid.jobs[0].task_json), curves))

    @staticmethod
    def suite_config(suite: str, seeds: list[int], debug: dict | None = None) -> DictConfig:
        """The evaluate config of a validation suite; ConfigError (one line) for the test suite, a
        suite that does not exist or lists no tasks, or one holding a test-suite task."""
        refuse_test_suite(suite)
        cfg = compose("evaluate", [f"suite={suite}", f"seeds={list(seeds)}", "extended_lrs=[]", "executor.workers=1",
                                   *debug_overrides(debug)])
        if cfg.suite.name in TEST_SUITES or not cfg.suite.members:
            raise ConfigError(f"validation.suite={suite}: not a suite of listed validation tasks")
        refuse_test_tasks(suite, OmegaConf.to_container(cfg.suite.members, resolve=True))
        return cfg

    def score(self, agent: RecurrentActorCritic, greedy: bool = True, guard: bool = True,
              lr_decay: str | None = None) -> tuple[float, dict[str, float]]:
        """The policy's score: (median over members, {member id: median speedup over seeds}),
        acting greedily (or sampling, seeded, with greedy=False), with the divergence guard
        (inner/guard.py) as `lhopt evaluate` runs by default, or without (guard=False), under
        the suite's protocol or that protocol with another `lr_decay` (the policy file's own).

        Runs under a forked RNG, so scoring does not change the meta-training that follows."""
        per_member = {}
        protocol = self.protocol if lr_decay is None else replace(self.protocol, lr_decay=lr_decay)
        with torch.random.fork_rng(devices=[]):
            numpy_state = np.random.get_state()
            try:
                for member in self.members:
                    runs = run_policy(agent, member.task_cfg, self.seeds, protocol, greedy=greedy, guard=guard)
                    ours = pd.DataFrame([{**point, "seed": seed, "method": "lhopt"}
                                         for seed, run in zip(self.seeds, runs) for point in run.result.curve])
                    rows = summarize(member.id, self.seeds, member.grid_curves, ours, self.paper_lrs)
                    per_member[member.id] = float(np.median([r["speedup"] for r in rows if r["method"] == "lhopt"]))
            finally:
                np.random.set_state(numpy_state)
        return float(np.median(list(per_member.values()))), per_member


def policy_and_suite(policy: Path, suite: str, seeds: list[int], grid_dir: Path,
                     console: Console | None = None) -> tuple[RecurrentActorCritic, ObservationProtocol, ValidationSuite]:
    """A policy file and a validation suite to score it on, under the file's protocol (the scripts
    that read a policy against a suite: scale_check.py, decision_trace.py): (agent, protocol,
    suite), the suite's missing grid runs going into `grid_dir`/`suite`. Raises ConfigError (one
    line) for a policy file or a suite that is refused, or a grid_dir the file system refuses."""
    from lhopt_cli.control.checkpoint import PolicyFileError, load_policy, policy_protocol

    try:
        agent, meta = load_policy(policy)
        protocol = policy_protocol(meta)
        return agent, protocol, ValidationSuite(suite, seeds, protocol, Path(grid_dir) / suite,
                                                console=console or Console(quiet=True))
    except PolicyFileError as error:
        raise ConfigError(str(error)) from None
    except OSError as error:
        raise ConfigError(f"--grid-dir {grid_dir}: {error.strerror or error}") from None


def check_validation_settings(validation: ValidationConfig) -> None:
    """train-policy's `validation` group, checked even when no pass will run (ConfigError): not
    the test suite, at least one seed."""
    refuse_test_suite(str(validation.suite))  # the values' ranges are checked with every key's (ranges.py)
    if not list(validation.seeds):
        raise ConfigError("validation.seeds must list at least one seed (got [])")
