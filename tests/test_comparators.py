"""The comparators that need no tuning: D-Adaptation, DoG, Mechanic, hypergradient AdamW and the
range test beside Prodigy and Schedule-Free, through the real CLI, and their stored tables."""
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import REPO, lhopt_env
from lhopt_cli.commands import evaluate
from lhopt_cli.inner.hypergradient import HypergradientAdamW
from lhopt_cli.inner.range_test import sweep_steps
from lhopt_cli.commands.method_runs import EXTRA_BASELINES
from lhopt_cli.results.summary import comparators_beaten, rank_among_untuned

SMOKE = ["suite=smoke", "debug=smoke", "seeds=[0]", "extended_lrs=[]"]


def test_hypergradient_adamw_moves_its_lr_by_the_gradient_dot_its_last_update():
    # one weight, loss w^2 / 2 (gradient w), no weight decay: the hand-computed Adam-HD steps
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = HypergradientAdamW([w], lr=0.1, hypergradient_lr=0.5, weight_decay=0.0, eps=0.0)
    w.grad = w.detach().clone()
    opt.step()  # Adam's first step is lr * sign(g): w 1.0 -> 0.9, the direction per unit lr u = 1
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1) and w.item() == pytest.approx(0.9)
    w.grad = w.detach().clone()  # g = 0.9: lr <- 0.1 + 0.5 * 0.9 * 1 = 0.55 before the step
    opt.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.55)
    m_hat = (0.9 * 0.1 * 1.0 + 0.1 * 0.9) / (1 - 0.9**2)  # torch's bias-corrected moments at step 2
    v_hat = (0.999 * 0.001 * 1.0 + 0.001 * 0.81) / (1 - 0.999**2)
    assert w.item() == pytest.approx(0.9 - 0.55 * m_hat / v_hat**0.5, rel=1e-5)
    with pytest.raises(ValueError, match="hypergradient_lr"):
        HypergradientAdamW([w], hypergradient_lr=-1.0)


def test_the_range_test_spends_a_tenth_of_the_run_at_most_and_never_more_than_half():
    assert sweep_steps(1000) == 100 and sweep_steps(300) == 30 and sweep_steps(100) == 17
    assert sweep_steps(20) == 10 and sweep_steps(1) == 1


@pytest.mark.parametrize("method", EXTRA_BASELINES)
def test_each_comparator_runs_through_the_real_cli(method, run_cli, tmp_path):
    result = run_cli("evaluate", *SMOKE, f"extra_baselines=[{method}]", f"run_dir={tmp_path / 'run'}")
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "run" / "summary.csv")
    scored = summary[summary.method == method]
    assert len(scored) == 2 and scored.speedup.notna().all() and (scored.final_valid_loss > 0).all()
    curves = pd.read_parquet(tmp_path / "run" / "results.parquet")
    ran = curves[curves.method == method]
    assert ran.groupby("run_id").step.max().tolist() == [8, 8]  # the whole run, the range test's sweep included


@pytest.mark.parametrize("args, message", [
    (["--suite", "smoke", "--methods", "dog,dog", "--out", "X"], "error: --methods names a comparator more than once"),
    (["--suite", "smoke", "--methods", "nope"], "error: unknown comparator 'nope'"),
    (["--suite", "test", "debug=smoke"], "error: overrides change the task settings: give --out"),
])
def test_make_comparator_tables_bad_input_is_one_line_and_writes_nothing(args, message, tmp_path):
    args = [str(tmp_path / "X") if a == "X" else a for a in args]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "suites" / "make_comparator_tables.py"), *args],
                          capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith(message), proc.stderr
    assert not (tmp_path / "X").exists()


def test_a_comparator_named_twice_is_refused(run_cli, tmp_path):
    result = run_cli("evaluate", *SMOKE, "extra_baselines=[dog,dog]", f"run_dir={tmp_path / 'run'}")
    assert result.exit_code != 0 and "extra_baselines lists dog more than once" in str(result.exception or result.output)
    assert not (tmp_path / "run").exists()


def test_a_bad_comparator_name_is_one_line_naming_the_known_ones(run_cli, tmp_path):
    result = run_cli("evaluate", *SMOKE, "extra_baselines=[adamw_hd]", f"run_dir={tmp_path / 'run'}")
    assert result.exit_code != 0
    message = str(result.exception or result.output).strip()
    assert "adamw_hd" in message and all(name in message for name in EXTRA_BASELINES)
    assert not (tmp_path / "run").exists()


def test_stored_comparator_runs_are_read_not_run_again(run_cli, tmp_path, monkeypatch):
    stored = tmp_path / "comparators"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "suites" / "make_comparator_tables.py"), "--suite", "smoke",
                           "--seeds", "0", "--out", str(stored / "smoke"), "debug=smoke", "--methods",
                           "prodigy,dog"], capture_output=True, text=True, env=lhopt_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = pd.read_parquet(stored / "smoke" / "results.parquet")
    kept.loc[kept.method == "dog", "valid_loss"] = 123.0  # a mark only a read can carry into the results
    kept.to_parquet(stored / "smoke" / "results.parquet")
    monkeypatch.setattr(evaluate, "STORED_COMPARATORS", stored)
    result = run_cli("evaluate", *SMOKE, "extra_baselines=[prodigy,dog]", f"run_dir={tmp_path / 'run'}")
    assert result.exit_code == 0, result.output
    assert "4 comparator runs read from" in result.output and "method runs (lhopt) on" in result.output
    curves = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert (curves[curves.method == "dog"].valid_loss == 123.0).all()
    rerun = subprocess.run([sys.executable, str(REPO / "scripts" / "suites" / "make_comparator_tables.py"), "--suite", "smoke",
                            "--seeds", "0", "--out", str(stored / "smoke"), "debug=smoke", "--methods",
                            "prodigy,dog"], capture_output=True, text=True, env=lhopt_env(), timeout=600)
    assert rerun.returncode == 0 and "every comparator run is recorded" in rerun.stdout


def test_lhopts_rank_among_the_untuned_choices_and_the_comparators_it_beats_per_task():
    table = pd.DataFrame({"task": ["a"] * 4 + ["b"] * 4, "method": ["lhopt", "prodigy", "dog", "oracle"] * 2,
                          "median": [1.0, 0.5, 1.2, 1.3, 0.3, 0.4, 0.1, 1.0]})
    assert comparators_beaten(table).to_dict() == {"a": 1, "b": 1}  # the oracle is no comparator
    totals = pd.DataFrame({"method": ["lhopt", "prodigy", "dog", "oracle"], "median": [0.65, 0.45, 0.65, 1.0]})
    assert rank_among_untuned(totals) == (1, 3)  # a tie shares the better place
    assert rank_among_untuned(totals[totals.method != "lhopt"]) is None


def _fit(maximize: bool = False, closure: bool = False, steps: int = 60):
    torch.manual_seed(0)
    x, y = torch.randn(256, 4), torch.randn(256, 1)
    net = torch.nn.Linear(4, 1)
    opt = HypergradientAdamW(net.parameters(), hypergradient_lr=1e-4, maximize=maximize)
    lrs = []
    for _ in range(steps):
        def loss_fn():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), y)
            (-loss if maximize else loss).backward()
            return loss
        if closure:
            opt.step(loss_fn)
        else:
            loss_fn()
            opt.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_hypergradient_adamw_maximising_and_with_a_closure_moves_the_lr_as_minimising_does():
    plain = _fit()
    assert _fit(maximize=True) == pytest.approx(plain)  # maximising -loss is minimising loss
    assert _fit(closure=True) == pytest.approx(plain)   # the closure's gradient is this step's
    assert plain[-1] > plain[0] > 0


def test_hypergradient_adamw_takes_a_plain_adamw_state():
    net = torch.nn.Linear(3, 1)
    plain = torch.optim.AdamW(net.parameters())
    net(torch.ones(2, 3)).sum().backward()
    plain.step()
    opt = HypergradientAdamW(net.parameters(), hypergradient_lr=1e-5)
    opt.load_state_dict(plain.state_dict())
    opt.step()
    assert opt.param_groups[0]["hypergradient_lr"] == 1e-5
