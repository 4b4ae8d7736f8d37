"""The leave-kinds-out protocol: held-out kinds (no training family draws them, the test suite
lacks them) make the validation_heldout suite; the wide family adds two training kinds."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from conftest import LHOPT, REPO, lhopt_env
from lhopt_cli.config.compose import compose
from lhopt_cli.control.privileged import KINDS, PRIVILEGED_NAMES, privileged_vector
from lhopt_cli.inner.optim import HParams
from lhopt_cli.tasks import HELDOUT_KINDS, build_task
from lhopt_cli.tasks.families import TaskFamily

TRAINING_FAMILIES = ("default", "extended", "wide", "nqm_low_lr")


def family(name: str) -> TaskFamily:
    return TaskFamily(OmegaConf.to_container(compose("train_policy", [f"task_family={name}"]).task_family, resolve=True))


def suite_members(name: str) -> list[dict]:
    return OmegaConf.to_container(compose("evaluate", [f"suite={name}"]).suite, resolve=True)["members"]


def small(name: str, *more: str):
    return build_task(compose("baseline_grid", [f"task={name}", "task.eval_points=3", *more]).task)


def test_held_out_kinds_are_in_no_training_family_and_not_in_the_test_suite():
    test_kinds = {m["task"] for m in suite_members("test")}
    for name in TRAINING_FAMILIES:
        assert not set(family(name).names) & (set(HELDOUT_KINDS) | test_kinds), name
    heldout = suite_members("validation_heldout")
    assert len(heldout) == 12 and {m["task"] for m in heldout} == set(HELDOUT_KINDS)
    assert len({m["id"] for m in heldout}) == 12
    short = suite_members("validation_heldout_short")  # the suite before it, sampled from the heldout family
    assert {m["task"] for m in short} == set(family("heldout").names) < set(HELDOUT_KINDS)
    assert {"mnist_autoencoder", "synthetic_tabular"} <= set(family("wide").names)
    assert set(family("extended").names) < set(family("wide").names)


def test_the_short_held_out_suite_is_what_its_script_samples(tmp_path):
    out = tmp_path / "validation_heldout_short.yaml"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "suites" / "make_validation_suite.py"), "--family", "heldout",
                           "--per-kind", "4", "--seed", "7200", "--name", "validation_heldout_short", "--out", str(out)],
                          capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    stored = yaml.safe_load((REPO / "conf" / "suite" / "validation_heldout_short.yaml").read_text())
    assert yaml.safe_load(out.read_text())["members"] == stored["members"]
    assert "Leave-kinds-out" in out.read_text().splitlines()[1]


@pytest.mark.parametrize("args", [["task_family=heldout"], ["task_family=wide", "+task_family.kinds.lorenz_forecast={weight: 1.0}"]])
def test_train_policy_refuses_a_family_that_draws_a_held_out_kind_in_one_line_and_leaves_no_folder(tmp_path, args):
    run_dir = tmp_path / "run"
    proc = subprocess.run([str(LHOPT), "train-policy", "debug=smoke", *args, f"run_dir={run_dir}"],
                          capture_output=True, text=True, env=lhopt_env(), timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: task_family draws ") and "held-out kinds" in lines[0]
    assert not run_dir.exists()


def test_the_lorenz_forecast_validates_on_the_trajectory_after_the_training_part():
    task = small("lorenz_forecast", "task.points=1000", "task.window=6", "task.horizon=2")
    assert task.x_train.shape[1] == 6 * 3 and task.y_train.shape[1] == 2 * 3
    # consecutive training windows overlap by all but one state: the series is read in order
    assert torch.equal(task.x_train[1, :-3], task.x_train[0, 3:])
    assert len(task.x_train) == 800 - 8 + 1 and len(task.x_valid) == 200 - 8 + 1
    # the training part is standardised, the validation part is its continuation
    states = torch.cat([task.x_train[:, :3], task.y_train[-1:, -3:]])
    assert states.mean(0).abs().max() < 0.1
    assert not torch.equal(task.x_valid[0], task.x_train[-1])
    again, other = small("lorenz_forecast", "task.points=1000"), small("lorenz_forecast", "task.points=1000", "task.data_seed=1")
    assert torch.equal(again.x_valid, small("lorenz_forecast", "task.points=1000").x_valid)
    assert not torch.equal(again.x_train[:10], other.x_train[:10])


def test_generated_tables_are_fixed_by_their_data_seed():
    for name, more in (("friedman_regression", []), ("synthetic_tabular", ["task.classes=8", "task.informative=2"])):
        a, b, other = small(name, *more), small(name, *more), small(name, *more, "task.data_seed=1")
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_valid, b.y_valid)
        assert not torch.equal(a.x_train, other.x_train)
        assert a.x_train.mean(0).abs().max() < 0.1 and (a.x_train.std(0) - 1).abs().max() < 0.1
    regression = small("friedman_regression")
    assert abs(float(regression.y_train.mean())) < 1e-4 and abs(float(regression.y_train.std()) - 1) < 1e-3
    table = small("synthetic_tabular", "task.classes=8", "task.informative=2")  # informative raised to 4
    assert set(table.y_train.tolist()) == set(range(8)) and table.build_model()[-1].out_features == 8


def test_the_autoencoder_reconstructs_its_input_and_the_transformer_reads_the_signal_in_tokens():
    autoencoder = small("mnist_autoencoder")
    assert torch.equal(autoencoder.x_train, autoencoder.y_train) and autoencoder.x_train.shape[1] == 784
    transformer = small("mnist1d_transformer", "task.num_train=3200", "task.num_valid=400", "task.n_head=3", "task.d_model=16")
    assert transformer.x_train.shape[1:] == (8, 5)
    assert transformer.build_model().embed.out_features == 18  # d_model rounded up to a multiple of the heads


def test_the_lstm_reads_the_signal_one_sample_per_step_and_its_last_step_classifies():
    lstm = small("mnist1d_lstm", "task.num_train=3200", "task.num_valid=400", "task.hidden=8")
    transformer = small("mnist1d_transformer", "task.num_train=3200", "task.num_valid=400")
    assert lstm.x_train.shape == (3200, 40) and torch.equal(lstm.x_train, transformer.x_train.flatten(1))
    model = lstm.build_model()
    assert model.rnn.cell == "lstm" and model.rnn.hh.in_features == 8
    logits = model(lstm.x_train[:5])
    assert logits.shape == (5, 10)
    changed = lstm.x_train[:5].clone()
    changed[:, -5] += 1.0  # an earlier sample reaches the last step through the recurrence
    assert not torch.allclose(model(changed), logits)
    last_only = lstm.x_train[:5].clone()
    last_only[:, :-1] = 0.0
    assert not torch.allclose(model(last_only), logits)  # more than the last sample is read


def test_the_critics_kind_inputs_keep_their_width_and_a_new_kind_reads_as_zeros():
    from lhopt_cli.control.checkpoint import load_policy

    agent, _ = load_policy(REPO / "src" / "lhopt_cli" / "policies" / "default.pt")
    assert agent.privileged_dim in (0, len(PRIVILEGED_NAMES)) and len(KINDS) == 16
    hp = HParams(lr=1e-3)
    for kind, ones in (("mlp_mnist", 1.0), ("synthetic_tabular", 0.0), ("lorenz_forecast", 0.0)):
        vector = privileged_vector(kind, hp, hp, 100, 0.5, 1.0, 0.5, 0.6)
        assert vector.shape == (len(PRIVILEGED_NAMES),) and np.sum(vector[:len(KINDS)]) == ones


def test_a_kind_spec_cannot_rename_the_task_it_builds_and_malformed_families_are_one_line(tmp_path):
    for args, message in (
            (["task_family=wide", "+task_family.kinds.synthetic_tabular.name=friedman_regression"],
             "error: task_family.kinds.synthetic_tabular.name: a kind is named by its key"),
            (["task_family.kinds.nqm=null"], "error: task_family.kinds.nqm must map parameters to ranges"),
            (["~task_family.kinds"], "error: task_family.kinds must map kind names to their ranges")):
        run_dir = tmp_path / "run"
        proc = subprocess.run([str(LHOPT), "train-policy", "debug=smoke", *args, f"run_dir={run_dir}"],
                              capture_output=True, text=True, env=lhopt_env(), timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(message), proc.stderr
        assert not run_dir.exists()


@pytest.mark.parametrize("task, override, message", [
    ("lorenz_forecast", "task.points=10", "task.points must be enough for a batch of training windows"),
    ("lorenz_forecast", "task.every=0", "task.every must be at least 1 (got 0)"),
    ("co2_forecast", "task.window=1900", "task.window must be short enough, with task.horizon (4), for a batch"),
    ("lorenz_forecast", "task.window=0", "task.window must be at least 1 (got 0)"),
    ("synthetic_tabular", "task.classes=1", "task.classes must be at least 2 (got 1)"),
    ("synthetic_tabular", "task.flip=1.5", "task.flip must be in [0, 1] (got 1.5)"),
    ("friedman_regression", "task.features=4", "task.features must be at least 5"),
    ("friedman_regression", "task.data_seed=-3", "task.data_seed must be in [0, 2^32) (got -3)"),
    ("mnist1d_transformer", "task.n_head=0", "task.n_head must be at least 1 (got 0)"),
    ("mnist1d_transformer", "task.num_train=5", "task.num_train must be at least one batch (32) (got 5)"),
    ("mnist_autoencoder", "task.code=0", "task.code must be at least 1 (got 0)"),
    ("mlp_mnist", "task.activation=softplus", "task.activation must be one of relu, tanh, gelu, silu (got softplus)"),
    ("mlp_mnist", "task.hidden=[64,0]", "task.hidden must be widths of at least 1 (got [64, 0])"),
    ("nqm", "task.noise=-1", "task.noise must be finite and non-negative (got -1.0)"),
])
def test_a_task_value_no_run_can_use_is_refused_when_the_config_is_composed(task, override, message):
    from lhopt_cli.config.compose import ConfigError

    with pytest.raises(ConfigError) as refused:
        compose("baseline_grid", [f"task={task}", override])
    assert str(refused.value).startswith(message)


def test_the_cli_refuses_a_bad_task_value_in_one_line_before_any_folder(tmp_path):
    run_dir = tmp_path / "grid"
    proc = subprocess.run([str(LHOPT), "baseline-grid", "task=lorenz_forecast", "task.horizon=-1", "debug=smoke",
                           f"run_dir={run_dir}"], capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == ["error: task.horizon must be at least 1 (got -1)"]
    assert not run_dir.exists()


def test_every_shipped_task_config_and_suite_member_passes_the_value_checks():
    import glob

    from lhopt_cli.config.suites import member_overrides
    from lhopt_cli.tasks import TASKS
    from lhopt_cli.tasks.limits import check_task_values

    for name in TASKS:
        compose("baseline_grid", [f"task={name}"])
    for path in glob.glob(str(REPO / "conf" / "suite" / "*.yaml")):
        for member in yaml.safe_load(open(path)).get("members", []):
            compose("baseline_grid", member_overrides(member))
    for name in TRAINING_FAMILIES + ("heldout",):
        rng, drawn_from = np.random.default_rng(0), family(name)
        for _ in range(200):
            check_task_values({**drawn_from.sample(rng), "eval_points": 25})


def test_a_run_on_the_wide_family_is_chosen_on_the_held_out_suite(run_cli, tmp_path):
    import pandas as pd

    run_dir = tmp_path / "wide"
    result = run_cli("train-policy", "debug=smoke", "task_family=wide", "validation.suite=validation_heldout",
                     "validation.every=1", "ppo.iterations=1", f"run_dir={run_dir}")
    assert result.exit_code == 0, result.output
    log = pd.read_csv(run_dir / "meta_train.csv")
    assert len(log) == 1 and log.validation_speedup.notna().all() and (log.validation_speedup >= 0).all()
    assert OmegaConf.load(run_dir / "config.yaml").validation.suite == "validation_heldout"
    assert (run_dir / "best.pt").exists()
