"""Scaling-law fits on synthetic data with known parameters, and bad inputs."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lhopt_cli.scaling.frontier import (bootstrap, constant_speedup, fit_power, fit_power_offset, frontier,
                                        interval)
from lhopt_cli.scaling.parametric import fit_parametric

RNG = np.random.default_rng(0)


def curves(method: str, cc: float, alpha: float, sizes=(1e6, 3e6, 1e7, 3e7, 1e8), noise=0.01, rng=RNG):
    """Learning curves of several model sizes whose lower envelope is L = (Cc / C)^alpha: each size
    follows the frontier up to its own compute, then flattens."""
    rows = []
    for n in sizes:
        knee = 1e3 * n ** 1.5
        for c in np.logspace(np.log10(knee) - 2, np.log10(knee) + 1, 25):
            loss = (cc / min(c, knee)) ** alpha * (1 + 0.05 * max(0.0, np.log10(c / knee)))
            rows.append({"method": method, "params": n, "tokens": c / (6 * n), "loss": loss * (1 + noise * rng.standard_normal())})
    return pd.DataFrame(rows).assign(compute=lambda d: 6 * d.params * d.tokens)


def test_frontier_fit_recovers_the_exponent_with_an_interval_holding_it():
    data = curves("baseline", 1e8, 0.076)
    front = frontier(data)
    fit = fit_power(front.compute, front.loss)
    assert fit.alpha == pytest.approx(0.076, rel=0.02)
    draws = bootstrap(lambda s: fit_power(s["f"].compute, s["f"].loss).alpha, {"f": front}, 200)
    low, high = interval(draws)
    assert low <= 0.076 <= high


def test_offset_fit_recovers_e_and_alpha():
    c = np.logspace(15, 21, 60)
    loss = (1.5 + (1e17 / c) ** 0.3) * (1 + 0.01 * RNG.standard_normal(60))
    fit = fit_power_offset(c, loss)
    assert fit.alpha == pytest.approx(0.3, rel=0.05) and fit.e == pytest.approx(1.5, rel=0.02)


def test_constant_speedup_under_a_shared_exponent():
    fronts = {"baseline": frontier(curves("baseline", 1e8, 0.076)), "lhopt": frontier(curves("lhopt", 0.5e8, 0.076))}
    # the same loss at half the compute: C_c halves, the speedup is 2
    assert constant_speedup(fronts, "baseline", "lhopt") == pytest.approx(2.0, rel=0.1)


def test_parametric_fit_recovers_the_chinchilla_exponents():
    rng = np.random.default_rng(1)  # its own draws: the module's RNG depends on which tests ran before
    n = np.exp(rng.uniform(np.log(1e6), np.log(1e9), 250))
    d = np.exp(rng.uniform(np.log(1e8), np.log(1e11), 250))
    loss = (1.69 + 406.4 / n**0.34 + 410.7 / d**0.28) * (1 + 0.01 * rng.standard_normal(250))
    fit = fit_parametric(n, d, loss)
    assert fit.converged
    assert fit.alpha == pytest.approx(0.34, rel=0.05) and fit.beta == pytest.approx(0.28, rel=0.05)
    assert fit.E == pytest.approx(1.69, rel=0.05)


def test_cli_end_to_end_on_a_csv(run_cli, tmp_path):
    table = pd.concat([curves("baseline", 1e8, 0.076), curves("lhopt", 0.5e8, 0.08)])
    table.rename(columns={"loss": "val_loss", "params": "n_params"}).to_csv(tmp_path / "logs.csv", index=False)
    result = run_cli("scaling-fit", f"inputs=[{tmp_path / 'logs.csv'}]", "columns.loss=val_loss",
                     "columns.params=n_params", "target.flops=1e22", "bootstrap=40", f"run_dir={tmp_path / 'out'}")
    assert result.exit_code == 0, result.output
    fits = pd.read_csv(tmp_path / "out" / "fits.csv")
    speedups = fits[fits.parameter.isin(["constant_speedup", "slope_aware_speedup"])]
    assert len(speedups) == 2 and (speedups.low <= speedups.estimate).all() and (speedups.estimate <= speedups.high).all()
    alpha = fits[(fits.method == "baseline") & (fits.fit == "L=(Cc/C)^alpha") & (fits.parameter == "alpha")]
    assert alpha.estimate.item() == pytest.approx(0.076, rel=0.03)
    assert (tmp_path / "out" / "scaling_frontier.png").exists() and (tmp_path / "out" / "fits.json").exists()


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.drop(columns=["loss"]), "missing column(s) loss"),
    (lambda d: d.assign(params=1e6), "a single model size"),
    (lambda d: d.assign(loss=np.where(np.arange(len(d)) == 3, -1.0, d.loss)), "not positive"),
    (lambda d: d.assign(loss=np.where(np.arange(len(d)) == 3, np.nan, d.loss)), "NaN"),
    (lambda d: d.head(3), "at least 5"),
])
def test_bad_tables_fail_with_one_line(run_cli, tmp_path, mutate, expected):
    mutate(curves("baseline", 1e8, 0.076)).to_csv(tmp_path / "t.csv", index=False)
    result = run_cli("scaling-fit", f"inputs=[{tmp_path / 't.csv'}]", "bootstrap=10", f"run_dir={tmp_path / 'o'}")
    assert result.exit_code != 0 and expected in str(result.exception)


def test_unreadable_file_fails_with_one_line(run_cli, tmp_path):
    (tmp_path / "t.parquet").write_text("not parquet")
    result = run_cli("scaling-fit", f"inputs=[{tmp_path / 't.parquet'}]", f"run_dir={tmp_path / 'o'}")
    assert result.exit_code != 0 and "not a readable table" in str(result.exception)


def test_the_parametric_objective_and_its_gradient_are_torchs_huber_loss_and_autograd():
    import torch

    from lhopt_cli.scaling.parametric import HUBER_DELTA, _coarse_scores, _grid, objective

    rng = np.random.default_rng(3)
    log_n, log_d = rng.uniform(13, 20, 2500), rng.uniform(18, 25, 2500)
    log_l = np.log(1.69 + 406.4 / np.exp(log_n) ** 0.34 + 410.7 / np.exp(log_d) ** 0.28) + rng.normal(0, 0.003, 2500)
    theta = np.array([0.4, 6.2, 0.3, 5.8, 0.27])
    t = torch.tensor(theta, requires_grad=True)
    n, d, l = (torch.tensor(v) for v in (log_n, log_d, log_l))
    pred = torch.logsumexp(torch.stack([t[0].expand_as(n), t[1] - t[2] * n, t[3] - t[4] * d]), 0)
    expected = torch.nn.functional.huber_loss(pred, l, delta=HUBER_DELTA, reduction="sum")
    expected.backward()
    value, grad = objective(theta, log_n, log_d, log_l)
    assert value == pytest.approx(float(expected.detach()), rel=1e-10)
    assert np.allclose(grad, t.grad.numpy(), rtol=1e-8, atol=1e-12)
    # the coarse scores, computed over chunks of 1,000 rows (2,500 here), equal the objective at each point
    grid = _grid()[::97]
    assert np.allclose(_coarse_scores(grid, log_n, log_d, log_l),
                       [objective(point, log_n, log_d, log_l)[0] for point in grid], rtol=1e-10)


def test_parametric_bootstrap_intervals_hold_the_truth():
    rng = np.random.default_rng(1)
    n = np.exp(rng.uniform(np.log(1e6), np.log(1e9), 250))
    d = np.exp(rng.uniform(np.log(1e8), np.log(1e11), 250))
    loss = (1.69 + 406.4 / n**0.34 + 410.7 / d**0.28) * (1 + 0.01 * rng.standard_normal(250))
    table = pd.DataFrame({"params": n, "tokens": d, "loss": loss})

    def refit(sample):
        fit = fit_parametric(sample["g"].params, sample["g"].tokens, sample["g"].loss, starts=2)
        return [fit.alpha, fit.beta]

    draws = bootstrap(refit, {"g": table}, 30, seed=1)
    for k, truth in enumerate((0.34, 0.28)):
        low, high = interval(draws[:, k])
        assert low <= truth <= high


def _iso_flop_points(tmp_path, noise: float):
    """L = 1.69 + 406.4 / N^0.34 + 410.7 / D^0.28 on 24 IsoFLOP-style points (4 budgets x 6 sizes)."""
    rng = np.random.default_rng(0)
    rows = []
    for compute in (1e18, 3e18, 1e19, 3e19):
        for n in np.geomspace(2e7, 6e8, 6):
            d = compute / (6 * n)
            rows.append({"params": n, "tokens": d,
                         "loss": (1.69 + 406.4 / n**0.34 + 410.7 / d**0.28) * np.exp(rng.normal(0, noise))})
    path = tmp_path / f"iso_{noise}.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("noise, truth_in", [(0.005, ("E", "A", "alpha", "a", "b")),
                                             (0.001, ("E", "A", "alpha", "beta", "a", "b"))])
def test_parametric_intervals_hold_their_estimate_and_the_truth(tmp_path, noise, truth_in):
    from rich.console import Console

    from lhopt_cli.commands import scaling_fit
    from lhopt_cli.config.compose import compose
    from lhopt_cli.scaling.parametric import fit_parametric, objective

    path = _iso_flop_points(tmp_path, noise)
    cfg = compose("scaling_fit", [f"inputs=[{path}]", "bootstrap=40", f"run_dir={tmp_path}"])
    rows = {r["parameter"]: r for r in scaling_fit.run(scaling_fit.plan(cfg), tmp_path, Console(quiet=True))
            if "N^alpha" in r["fit"] or "compute-optimal" in r["fit"]}
    truth = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28, "a": 0.28 / 0.62, "b": 0.34 / 0.62}
    for name, row in rows.items():
        assert row["low"] <= row["estimate"] <= row["high"], (name, row)
        if name in truth_in:
            assert row["low"] <= truth[name] <= row["high"], (name, row)
    # the point fit reaches an optimum at least as good as the true parameters (not a poor one)
    data = pd.read_csv(path)
    logs = tuple(np.log(data[c].to_numpy()) for c in ("params", "tokens", "loss"))
    true_theta = np.array([np.log(1.69), np.log(406.4), 0.34, np.log(410.7), 0.28])
    fit = fit_parametric(data.params, data.tokens, data.loss)
    assert fit.objective <= objective(true_theta, *logs)[0] + 1e-12
    assert json.loads((tmp_path / "fits.json").read_text())  # strict JSON (null where a number is missing)


def test_scaling_tables_as_papers_write_them(tmp_path, monkeypatch, capsys):
    from lhopt_cli.commands.cli import main
    from lhopt_cli.scaling.inputs import parse_number

    assert [parse_number(v) for v in ("44M", "2B", "3.74", "1.4T", "500k", "2G", "1e9")] == [
        44e6, 2e9, 3.74, 1.4e12, 5e5, 2e9, 1e9]
    sizes = ["10M", "20M", "40M", "80M", "160M", "320M"]
    lines = ["params,tokens,loss"] + [f"{n},{t},{3.0 + 1 / (i + j + 1):.3f}" for i, n in enumerate(sizes)
                                      for j, t in enumerate(["1B", "2B", "4B"])]
    good = tmp_path / "units.csv"
    good.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(sys, "argv", ["lhopt", "scaling-fit", f"inputs=[{good}]", "bootstrap=10", "parametric=false",
                                      f"run_dir={tmp_path / 'fit'}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0, capsys.readouterr().err
    cases = {"header.csv": ("params,tokens,loss\n", "no rows"),
             "text.csv": ("\n".join(lines[:3] + ["10M,1B,high"] + lines[3:]) + "\n", "column 'loss': 'high' is not a number"),
             "negative.csv": ("\n".join(lines[:3] + ["-5M,1B,3.1"] + lines[3:]) + "\n", "column 'params': -5e+06 is not a valid"),
             "nan_params.csv": ("\n".join(lines[:3] + ["abc,1B,3.1"] + lines[3:]) + "\n", "column 'params': 'abc'")}
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        monkeypatch.setattr(sys, "argv", ["lhopt", "scaling-fit", f"inputs=[{tmp_path / name}]", "bootstrap=10",
                                          f"run_dir={tmp_path / ('fit_' + name)}"])
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 1 and len(err) == 1 and expected in err[0], (name, err)
        assert not (tmp_path / ("fit_" + name)).exists()  # refused before a run folder exists
    # headers as people write them, and too few resamples
    (tmp_path / "caps.csv").write_text("Params, Tokens, Loss\n" + "\n".join(lines[1:]) + "\n")
    monkeypatch.setattr(sys, "argv", ["lhopt", "scaling-fit", f"inputs=[{tmp_path / 'caps.csv'}]", "bootstrap=10",
                                      "parametric=false", f"run_dir={tmp_path / 'fit_caps'}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0, capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["lhopt", "scaling-fit", f"inputs=[{good}]", "bootstrap=0",
                                      f"run_dir={tmp_path / 'fit_b0'}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1 and "bootstrap must lie in [10, 100000] (got 0)" in capsys.readouterr().err


def test_a_run_folder_with_diverged_runs_is_fitted_without_them(tmp_path, monkeypatch, capsys):
    from lhopt_cli.commands.cli import main
    from lhopt_cli.results.store import ResultsStore

    store, records = ResultsStore(tmp_path / "grid"), []
    for i, n in enumerate((1e5, 2e5, 4e5, 8e5)):
        for diverged in (False, True):
            curve = [{"step": s, "tokens_or_examples": 1000.0 * s, "flops": 6 * n * 1000.0 * s,
                      "valid_loss": (float("nan") if diverged and s >= 3 else 2.0 + 50 / (n ** 0.3) / (s + 1) ** 0.5)}
                     for s in range(6)]
            run = {"run_id": f"r{i}{diverged}", "command": "baseline-grid", "method": "adamw", "task": "t",
                   "task_params": "{}", "model_params": n, "seed": 0, "lr0": 1e-3, "schedule": "constant",
                   "status": "diverged" if diverged else "done", "steps": 6, "total_steps": 6,
                   "final_valid_loss": curve[-1]["valid_loss"], "wall_s": 1.0, "error": ""}
            records.append((run, curve))
    store.add(records)
    monkeypatch.setattr(sys, "argv", ["lhopt", "scaling-fit", f"inputs=[{tmp_path / 'grid'}]", "bootstrap=10",
                                      "parametric=false", f"run_dir={tmp_path / 'fit'}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err
    assert "dropped 12 points whose loss is not finite (diverged runs)" in out.out
    assert json.loads((tmp_path / "fit" / "fits.json").read_text())


def test_tables_piped_into_a_file_keep_every_cell_whole(tmp_path):
    from conftest import LHOPT, lhopt_env

    pd.concat([curves("baseline", 1e8, 0.076), curves("lhopt", 0.5e8, 0.08)]).to_csv(tmp_path / "logs.csv", index=False)
    env = {k: v for k, v in lhopt_env().items() if k != "COLUMNS"}
    proc = subprocess.run([str(LHOPT), "scaling-fit", f"inputs=[{tmp_path / 'logs.csv'}]", "target.flops=1e22",
                           "bootstrap=10", "parametric=false", f"run_dir={tmp_path / 'out'}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if "speedup" in line]
    # rich's 80 columns cut these as "constant_spee…" and wrapped "[1.00, / 1.00]" over two lines
    assert any("constant_speedup" in r for r in rows) and any("slope_aware_speedup" in r for r in rows), proc.stdout
    assert "…" not in proc.stdout
    # the refits say how far they are (2 methods x (10 + 20) frontier draws, 2 x 10 speedup draws)
    assert re.search(r"bootstrap refits: 80/80 \(100%\)", proc.stdout), proc.stdout
    assert all(line.count("[") == line.count("]") for line in proc.stdout.splitlines()), proc.stdout


@pytest.mark.parametrize("target, message", [("target.flops=-1e18", "target.flops must be positive and finite"),
                                             ("target.flops=nan", "target.flops must be positive and finite"),
                                             ("target.params=0", "target.params must be positive and finite")])
def test_a_target_no_fit_can_reach_is_refused_before_any_folder(run_cli, tmp_path, target, message):
    curves("baseline", 1e8, 0.076).to_csv(tmp_path / "logs.csv", index=False)
    result = run_cli("scaling-fit", f"inputs=[{tmp_path / 'logs.csv'}]", target, f"run_dir={tmp_path / 'out'}")
    assert result.exit_code != 0 and message in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_an_input_above_the_parametric_limit_is_refused_before_any_folder_and_fits_without_it(run_cli, tmp_path):
    from lhopt_cli.scaling.parametric import MAX_ROWS

    rng = np.random.default_rng(4)
    rows = MAX_ROWS + 1
    n, d = np.exp(rng.uniform(13, 20, rows)), np.exp(rng.uniform(18, 25, rows))
    table = pd.DataFrame({"method": "baseline", "params": n, "tokens": d,
                          "loss": 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28})
    table.to_csv(tmp_path / "big.csv", index=False)
    result = run_cli("scaling-fit", f"inputs=[{tmp_path / 'big.csv'}]", "bootstrap=10", f"run_dir={tmp_path / 'o'}")
    assert result.exit_code != 0 and not (tmp_path / "o").exists()
    message = str(result.exception)
    assert "\n" not in message and f"method 'baseline' has {rows:,}" in message and "parametric=false" in message
    result = run_cli("scaling-fit", f"inputs=[{tmp_path / 'big.csv'}]", "bootstrap=10", "parametric=false",
                     f"run_dir={tmp_path / 'o'}")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "fits.csv").exists()


@pytest.mark.parametrize("header, cell, message", [
    ("params,tokens,loss,loss", None, "columns 'loss' and 'loss' both read as loss: keep one, or rename the other"),
    ("params,tokens,loss,Loss", None, "columns 'loss' and 'Loss' both read as loss: keep one, or rename the other"),
    ("params,tokens,loss", "1.5M", "column 'loss': '1.5M' is not a number"),
])
def test_an_ambiguous_or_suffixed_loss_column_is_one_line(run_cli, tmp_path, header, cell, message):
    rows = [(n, t, 1 + 1e3 / n**0.3 + 1e3 / t**0.3) for n in (1e6, 3e6, 1e7) for t in (1e8, 3e8, 1e9, 3e9)]
    width = len(header.split(","))
    body = "".join(f"{n},{t},{cell if cell and k == 0 else loss}" + f",{2 * loss}" * (width - 3) + "\n"
                   for k, (n, t, loss) in enumerate(rows))
    (tmp_path / "t.csv").write_text(header + "\n" + body)
    result = run_cli("scaling-fit", f"inputs=[{tmp_path / 't.csv'}]", "bootstrap=10", f"run_dir={tmp_path / 'o'}")
    assert result.exit_code != 0 and str(result.exception) == f"{tmp_path / 't.csv'}: {message}"
    assert not (tmp_path / "o").exists()


def test_parametric_intervals_hold_the_truth_of_most_synthetic_laws():
    """The coverage check of scripts/bench/interval_coverage.py at a small size (12 laws of 30 to 60
    points, 60 refits each): E, alpha and beta's 95% intervals hold the truth for 11 of 12."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "bench"))
    from interval_coverage import coverage

    shares = coverage(laws=12, draws=60, seed=0, points=(30, 60))
    assert all(shares[name] >= 11 / 12 for name in ("E", "alpha", "beta")), shares


def test_a_scaling_fit_input_too_large_to_read_is_refused_before_reading(run_cli, tmp_path):
    from lhopt_cli.scaling.inputs import MAX_INPUT_BYTES

    big = tmp_path / "big.csv"
    with big.open("wb") as handle:  # sparse: no disk used
        handle.truncate(MAX_INPUT_BYTES + 1)
    result = run_cli("scaling-fit", f"inputs=[{big}]", f"run_dir={tmp_path / 'o'}")
    assert result.exit_code != 0 and f"{MAX_INPUT_BYTES + 1:,} bytes, above the" in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_the_same_input_given_twice_is_refused(run_cli, tmp_path):
    curves("baseline", 1e8, 0.076).to_csv(tmp_path / "t.csv", index=False)
    result = run_cli("scaling-fit", f"inputs=[{tmp_path / 't.csv'},{tmp_path / '.' / 't.csv'}]",
                     f"run_dir={tmp_path / 'o'}")
    assert result.exit_code != 0 and f"inputs lists {tmp_path / 't.csv'} twice" in str(result.exception)
    assert not (tmp_path / "o").exists()
