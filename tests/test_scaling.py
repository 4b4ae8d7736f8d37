"""Scaling-law fits on synthetic data with known parameters, and bad inputs."""
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
    n = np.exp(RNG.uniform(np.log(1e6), np.log(1e9), 250))
    d = np.exp(RNG.uniform(np.log(1e8), np.log(1e11), 250))
    loss = (1.69 + 406.4 / n**0.34 + 410.7 / d**0.28) * (1 + 0.01 * RNG.standard_normal(250))
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
