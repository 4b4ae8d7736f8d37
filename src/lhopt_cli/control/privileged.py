"""What the critic may see and the actor may not (docs/method.md section 4): inputs that explain an
episode's return but carry units or name the task, so a policy acting on them would not
transfer. Only meta-training computes them; `Controller` and `lhopt evaluate` never need them.
"""
from __future__ import annotations

import math

import numpy as np

from lhopt_cli.inner.optim import HParams
from lhopt_cli.control.actions import logit

# One-hot positions of the task kind, fixed: a critic's input width is stored in every policy file,
# so kinds added later (which no family trained before them) read as all zeros rather than
# widening the critic of files already written.
KINDS = ("algorithmic", "char_lm", "cnn_mnist", "co2_forecast", "code_lm", "digits_transformer", "fair_tabular",
         "markov_lm", "mlp_digits", "mlp_mnist", "mnist1d_conv", "nqm", "patch_autoencoder",
         "randhie_regression", "resnet_mnist", "sequence_classification")
HPARAM_LOGS = ("log_lr", "log_one_minus_beta1", "log_one_minus_beta2", "log_eps", "log_weight_decay", "clip_logit")
PRIVILEGED_NAMES = (
    *(f"kind_{k}" for k in KINDS),
    *(f"start_{name}" for name in HPARAM_LOGS),
    *(f"now_{name}" for name in HPARAM_LOGS),
    "log_total_steps", "progress", "log_initial_valid", "log_valid", "log_train",
)


def _log10(value: float) -> float:
    return math.log10(max(float(value), 1e-12)) if math.isfinite(value) else 0.0


def _hparam_logs(hp: HParams) -> list[float]:
    return [_log10(hp.lr), _log10(1.0 - hp.beta1), _log10(1.0 - hp.beta2), _log10(hp.eps),
            _log10(hp.weight_decay), logit(hp.clip)]


def privileged_vector(kind: str, start: HParams, now: HParams, total_steps: int, progress: float,
                      initial_valid: float, valid: float, train: float | None) -> np.ndarray:
    """(len(PRIVILEGED_NAMES),) float32: the task kind (one-hot over KINDS; all zeros for another), the start and current
    hyperparameters in logs (absolute units), log10 of the run's length, its progress, and log10
    of the raw losses (validation at step 0 and latest, the last interval's training loss; 0
    where missing or not finite)."""
    onehot = [1.0 if k == kind else 0.0 for k in KINDS]
    losses = [_log10(initial_valid), _log10(valid), _log10(train if train is not None else math.nan)]
    values = [*onehot, *_hparam_logs(start), *_hparam_logs(now), math.log10(max(total_steps, 1)), progress, *losses]
    return np.asarray(values, dtype=np.float32)
