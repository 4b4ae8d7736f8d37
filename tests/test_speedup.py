"""Speedup over the baseline envelope on synthetic curves with known answers."""
import numpy as np
import pytest

from lhopt_cli.results.speedup import ema, envelope, first_step_reaching, speedup

STEPS = np.arange(0, 101, 10.0)  # 11 evaluation points, T = 100


def test_ema_and_envelope():
    np.testing.assert_allclose(ema([4.0, 2.0, 2.0], decay=0.5), [4.0, 3.0, 2.5])
    assert np.isinf(ema([1.0, np.nan], decay=0.5)[-1])
    np.testing.assert_allclose(envelope([np.array([3, 2, 2.5]), np.array([4, 2.2, 1.0])]), [3, 2, 1.0])


def test_first_step_interpolates_between_points():
    assert first_step_reaching([0, 10, 20], [3.0, 2.0, 1.0], 1.5) == pytest.approx(15.0)
    assert first_step_reaching([0, 10], [3.0, 2.0], 1.0) is None


def test_a_method_twice_as_fast_has_speedup_two():
    baseline = 10.0 / (1 + STEPS)                       # reaches L* = 10/101 at T = 100
    method = 10.0 / (1 + 2 * STEPS)                     # the same curve at twice the speed
    s = speedup(STEPS, method, [baseline, baseline * 1.5], decay=0.0)
    assert s == pytest.approx(2.0, rel=0.05)


def test_same_curve_has_speedup_one_and_a_flat_bad_method_is_below_one():
    baseline = 10.0 / (1 + STEPS)
    assert speedup(STEPS, baseline, [baseline], decay=0.0) == pytest.approx(1.0)
    # never reaches L*: ends where the envelope was at step 50, so the speedup is 50 / 100
    slow = np.minimum(10.0, 10.0 / (1 + STEPS / 1e9))
    slow[-1] = 10.0 / 51
    slow[:-1] = np.maximum(slow[:-1], 10.0 / 51 + 1)
    assert speedup(STEPS, slow, [baseline], decay=0.0) == pytest.approx(0.5, rel=1e-6)


def test_envelope_takes_the_best_baseline_at_each_step():
    fast_early = np.concatenate([10.0 / (1 + 4 * STEPS[:3]), np.full(8, 10.0 / 81)])  # stalls after step 20
    slow_late = 10.0 / (1 + STEPS)                                                     # ends lower
    method = 10.0 / (1 + 2 * STEPS)
    # L* = 10/101 comes from slow_late; the method reaches it at step 50
    assert speedup(STEPS, method, [fast_early, slow_late], decay=0.0) == pytest.approx(2.0, rel=0.02)


def test_diverged_method_has_speedup_zero():
    baseline = 10.0 / (1 + STEPS)
    method = baseline.copy()
    method[5:] = np.inf
    assert speedup(STEPS, method, [baseline], decay=0.0) == 0.0


def test_a_run_that_diverges_after_touching_the_target_scores_zero():
    import math

    steps = [0, 2, 4, 6, 8]
    value = speedup(steps, [70.5, 70.1, 66.1, 33.9, math.nan], [[70.5, 68.4, 66.4, 64.4, 62.5]])
    assert value == 0.0  # it reached the envelope's final loss at step ~5, then blew up: not finished
    assert speedup(steps, [70.5, 70.1, 66.1, 33.9, 30.0], [[70.5, 68.4, 66.4, 64.4, 62.5]]) > 1.0


def test_a_grid_without_a_finished_run_is_refused():
    import math

    import pytest

    from lhopt_cli.results.speedup import NoFinishedBaseline

    with pytest.raises(NoFinishedBaseline, match="no run that finished"):
        speedup([0, 1, 2], [3.0, 2.0, 1.0], [[3.0, 2.0, math.nan], [3.0, math.inf, math.inf]])
