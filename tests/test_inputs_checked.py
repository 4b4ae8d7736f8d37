"""Inputs read from files and settings are checked whole, before anything uses them: schedule
files, replays, scaling-fit's column mapping, train-policy's validation suite, the reference-grid
script's overrides."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import LHOPT, REPO, lhopt_env
from lhopt_cli.loop.replay import ReplaySchedule
from lhopt_cli.loop.schedule_file import ScheduleFileError, build_schedule, read_schedule
from lhopt_cli.inner.optim import HParams

START = HParams(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, clip=0.8)


def schedule(**changes) -> dict:
    made = build_schedule(START, [{"step": 5, **START.as_dict(), "lr": 2e-3}], 10, "linear", "toy", 0, None)
    made.update(changes)
    return made


def write(tmp_path, text: str):
    path = tmp_path / "s.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    (json.dumps(schedule()).replace('"lr": 0.002', '"lr": 1e300'), "points[1].lr = 1e+300 is out of range"),
    (json.dumps(schedule()).replace('"lr": 0.002', '"lr": 1' + "0" * 400), "points[1] holds a value that is not a finite number"),
    (json.dumps(schedule(lr_decay=["linear"])), "unknown lr_decay"),
    (json.dumps(schedule(group_ratios="all")), "group_ratios must be a non-empty list"),
    (json.dumps(schedule(group_ratios=[{"lr": -1, "weight_decay": 1}])), "group_ratios must be a non-empty list"),
    (json.dumps(schedule()).replace('"weight_decay": 0.01', '"weight_decay": 1e6'), "weight_decay = 1000000.0 is out of range"),
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
])
def test_a_schedule_file_is_checked_whole_in_one_line(tmp_path, text, message):
    with pytest.raises(ScheduleFileError, match="^schedule .*") as raised:
        read_schedule(write(tmp_path, text))
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_evaluate_refuses_a_replay_whose_lr_no_optimizer_can_use_in_one_line(tmp_path):
    path = write(tmp_path, json.dumps(schedule()).replace('"lr": 0.002', '"lr": 1e300'))
    proc = subprocess.run([str(LHOPT), "evaluate", "debug=smoke", "tasks=[nqm]", "seeds=[0]", f"replay={path}",
                           "extra_baselines=[]", f"run_dir={tmp_path / 'e'}"], capture_output=True, text=True,
                          env=lhopt_env(), timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: replay={path}: points[1].lr = 1e+300 is out of range"], proc.stderr
    assert not (tmp_path / "e").exists()


def test_a_tensor_lr_stays_the_same_tensor_through_a_replay():
    weight = torch.nn.Parameter(torch.ones(3))
    lr = torch.tensor(1e-3)
    optimizer = torch.optim.AdamW([weight], lr=lr)
    replay = ReplaySchedule(optimizer, schedule(), 10)
    for _ in range(6):
        weight.grad = torch.ones(3)
        optimizer.step()
        replay.step()
    assert optimizer.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(replay.hparams.lr)


def test_a_replay_on_an_optimizer_at_lr_0_is_refused_and_a_dict_is_checked_as_a_file():
    weight = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="learning rate is 0 in every param group"):
        ReplaySchedule(torch.optim.AdamW([weight], lr=0.0), schedule(), 10)
    bad = schedule()
    bad["points"][1]["lr"] = 1e300
    with pytest.raises(ScheduleFileError, match="out of range"):
        ReplaySchedule(torch.optim.AdamW([weight], lr=1e-3), bad, 10)


def test_scaling_fit_names_two_quantities_read_from_one_column(run_cli, tmp_path):
    from test_scaling import curves

    curves("baseline", 1e8, 0.076).to_csv(tmp_path / "t.csv", index=False)
    result = run_cli("scaling-fit", f"inputs=[{tmp_path / 't.csv'}]", "columns.loss=params", f"run_dir={tmp_path / 'o'}")
    assert result.exit_code != 0
    assert "columns.params and columns.loss both name the column 'params'" in str(result.exception)


@pytest.mark.parametrize("every", [0, 25])
def test_train_policy_refuses_a_validation_suite_that_does_not_exist_with_passes_on_or_off(run_cli, tmp_path, every):
    result = run_cli("train-policy", "debug=smoke", "validation.suite=bogus", f"validation.every={every}",
                     f"run_dir={tmp_path / 'r'}")
    assert result.exit_code != 0 and "bogus" in str(result.exception)
    assert not (tmp_path / "r").exists()


def test_make_reference_grids_plans_before_it_writes_and_reads_overrides_after_seeds(tmp_path):
    script = REPO / "scripts" / "suites" / "make_reference_grids.py"
    bad = subprocess.run([sys.executable, str(script), "--suites", "smoke", "--seeds", "0", "--out", str(tmp_path / "bad"),
                          "task.batch_size=-1"], capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert bad.returncode == 1 and bad.stderr.startswith("error: "), bad.stderr
    assert not (tmp_path / "bad").exists()  # no empty folder left behind
    good = subprocess.run([sys.executable, str(script), "--suites", "smoke", "--members", "nqm_small", "--seeds", "0",
                           "debug=smoke", "--paper-only", "--out", str(tmp_path / "good")],
                          capture_output=True, text=True, env=lhopt_env(), timeout=600)
    assert good.returncode == 0, good.stderr[-2000:]
    assert (tmp_path / "good" / "smoke" / "runs.parquet").is_file()


def test_a_one_task_evaluate_prints_the_totals_and_a_ratio_that_leaves_a_task_out_names_it(run_cli, smoke_policy, tmp_path):
    import pandas as pd
    from rich.console import Console

    from lhopt_cli.commands.evaluate import SUMMARY_COLUMNS, print_summary

    result = run_cli("evaluate", "debug=smoke", f"policy={smoke_policy}", "tasks=[nqm]", "seeds=[0]",
                     "extra_baselines=[]", "extended_lrs=[]", f"run_dir={tmp_path / 'e'}")
    assert result.exit_code == 0, result.output
    assert "over the tasks: median of the per-task medians over seeds" in result.output
    rows = []
    for task, fixed in (("kept", 0.5), ("zero", 0.0)):
        for method, speedup in (("best_baseline", 1.0), ("lhopt", 0.8), ("fixed_default", fixed)):
            rows.append({"task": task, "seed": 0, "method": method, "final_valid_loss": 1.0, "speedup": speedup,
                         "best_lr": 1e-3, "best_schedule": "constant", "best_at_edge": False,
                         "speedup_extended": speedup, "best_lr_extended": 1e-3})
    console = Console(record=True, width=200)
    print_summary(pd.DataFrame(rows, columns=SUMMARY_COLUMNS), console)
    text = console.export_text()
    assert "vs fixed_default leaves out zero: fixed_default scores 0 there" in text, text


def test_scaling_fit_says_why_no_speedup_follows_when_the_method_is_not_among_the_inputs(run_cli, tmp_path):
    import pandas as pd
    from test_scaling import curves

    pd.concat([curves("baseline", 1e8, 0.076), curves("lhopt", 5e7, 0.076)]).to_csv(tmp_path / "t.csv", index=False)
    result = run_cli("scaling-fit", f"inputs=[{tmp_path / 't.csv'}]", "method=nope", "bootstrap=10", "parametric=false",
                     f"run_dir={tmp_path / 'o'}")
    assert result.exit_code == 0, result.output
    assert "no speedup of method=nope over baseline=baseline: the inputs' methods are baseline, lhopt" in \
        result.output.replace("\n", " ")
