"""Values a task's config types let through but no run can use, refused before anything runs.

`check_task_values` reads a task config (conf/task/ merged into its schema) and raises
TaskValueError with one line naming the key, the bound and the value. The bounds are by key name,
the same for every kind that has the key, plus the few that tie two keys of one kind together.
"""
from __future__ import annotations

import math
from typing import Any

AT_LEAST_1 = ("batch_size", "num_train", "num_valid", "window", "horizon", "points", "every", "n_head", "n_layer",
              "d_model", "code", "features", "informative", "vocab", "context", "length", "dim", "steps", "patch",
              "patches_per_image", "width", "max_chars", "valid_size", "max_steps", "eval_points")
CHOICES = {"activation": ("relu", "tanh", "gelu", "silu"), "norm": ("none", "layernorm"),
           "cell": ("rnn", "gru", "lstm"), "problem": ("xor", "addition")}
WIDTH_ROUNDED_TO_HEADS = ("mnist1d_transformer", "markov_lm")  # kinds whose d_model is rounded up to a multiple of n_head
DATA_SEED_LIMIT = 2**32  # scikit-learn's and numpy's legacy seeds


class TaskValueError(ValueError):
    pass


def _refuse(key: str, rule: str, value: Any) -> None:
    raise TaskValueError(f"task.{key} must be {rule} (got {value})")


def check_task_values(cfg: Any) -> None:
    """TaskValueError (one line) for a task config value no run can use: sizes below 1, fewer than
    2 classes, a negative noise, a label-flip share outside [0, 1], a data seed outside [0, 2^32),
    an unknown activation, norm, cell or problem, hidden widths below 1, fewer training examples
    than one batch, an NQM condition below 1 or not finite, a head count that does not divide
    d_model, a negative pretraining length, a forecast window (co2_forecast, lorenz_forecast) too long for its series, a friedman_regression
    with fewer than its 5 relevant features. `cfg`: a mapping (DictConfig or dict)."""
    get = cfg.get
    for key in AT_LEAST_1:
        value = get(key)
        if value is not None and int(value) < 1:
            _refuse(key, "at least 1", value)
    for key, options in CHOICES.items():
        if get(key) is not None and get(key) not in options:
            _refuse(key, f"one of {', '.join(options)}", get(key))
    for key in ("hidden", "channels"):
        widths = get(key)
        if widths is not None and not isinstance(widths, int) and any(int(w) < 1 for w in widths):
            _refuse(key, "widths of at least 1", list(widths))
        if isinstance(widths, int) and widths < 1:
            _refuse(key, "at least 1", widths)
    if get("classes") is not None and int(get("classes")) < 2:
        _refuse("classes", "at least 2", get("classes"))
    for key in ("noise", "concentration"):
        value = get(key)
        if value is not None and not (math.isfinite(float(value)) and float(value) >= (0 if key == "noise" else 1e-12)):
            _refuse(key, "finite and non-negative" if key == "noise" else "finite and positive", value)
    if get("condition") is not None and not (math.isfinite(float(get("condition"))) and float(get("condition")) >= 1):
        _refuse("condition", "finite and at least 1 (the ratio of the largest to the smallest curvature)",
                get("condition"))
    if get("pretrain_steps") is not None and int(get("pretrain_steps")) < 0:
        _refuse("pretrain_steps", "at least 0", get("pretrain_steps"))
    name = get("name")
    if (get("n_head") is not None and get("d_model") is not None and name not in WIDTH_ROUNDED_TO_HEADS
            and int(get("d_model")) % int(get("n_head"))):
        _refuse("n_head", f"a divisor of task.d_model ({get('d_model')}): each head takes d_model / n_head of it",
                get("n_head"))
    if get("flip") is not None and not 0.0 <= float(get("flip")) <= 1.0:
        _refuse("flip", "in [0, 1]", get("flip"))
    if get("data_seed") is not None and not 0 <= int(get("data_seed")) < DATA_SEED_LIMIT:
        _refuse("data_seed", "in [0, 2^32)", get("data_seed"))
    if get("num_train") is not None and get("batch_size") is not None and int(get("num_train")) < int(get("batch_size")):
        _refuse("num_train", f"at least one batch ({get('batch_size')})", get("num_train"))
    if name == "friedman_regression" and int(get("features")) < 5:
        _refuse("features", "at least 5 (Friedman's function reads 5 inputs)", get("features"))
    if name == "co2_forecast":
        from lhopt_cli.tasks.data import co2_weekly
        from lhopt_cli.tasks.forecast import co2_window_counts

        weeks, window, horizon = len(co2_weekly()), int(get("window")), int(get("horizon"))
        training, validation = co2_window_counts(weeks, window, horizon)
        if training < int(get("batch_size")) or validation < 1:
            _refuse("window", f"short enough, with task.horizon ({horizon}), for a batch of training windows in the "
                              f"first {int(0.8 * weeks)} of the series' {weeks} weeks and one validation window after them", window)
    if name == "lorenz_forecast":
        from lhopt_cli.tasks.heldout import lorenz_window_counts

        span = int(get("window")) + int(get("horizon"))
        training, validation = lorenz_window_counts(int(get("points")), int(get("window")), int(get("horizon")))
        if training < int(get("batch_size")) or validation < 1:
            _refuse("points", f"enough for a batch of training windows and one validation window of "
                              f"window + horizon = {span} states in its last fifth", get("points"))
