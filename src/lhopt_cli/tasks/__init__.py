"""One-epoch training tasks, built from a task config (conf/task/)."""
from __future__ import annotations

import importlib

# name -> (module, class): the classes (and torch) are imported when a task is built, so the
# command line's help and config errors do not wait for torch
KINDS: dict[str, tuple[str, str]] = {
    "algorithmic": ("algorithmic", "Algorithmic"),
    "mlp_mnist": ("vision", "MlpMnist"),
    "mlp_digits": ("vision", "MlpDigits"),
    "cnn_mnist": ("vision", "CnnMnist"),
    "mnist1d_conv": ("mnist1d", "Mnist1dConv"),
    "char_lm": ("text_lm", "CharLm"),
    "nqm": ("nqm", "Nqm"),
    "markov_lm": ("synthetic_text", "MarkovLm"),
    "sequence_classification": ("synthetic_text", "SequenceClassification"),
    "mnist_autoencoder": ("autoencoder", "MnistAutoencoder"),
    "synthetic_tabular": ("tabular", "SyntheticTabular"),
    # kinds the training family never draws (the test suite)
    "code_lm": ("text_lm", "CodeLm"),
    "fair_tabular": ("tabular", "FairTabular"),
    "randhie_regression": ("tabular", "RandhieRegression"),
    "co2_forecast": ("forecast", "Co2Forecast"),
    "patch_autoencoder": ("autoencoder", "PatchAutoencoder"),
    "resnet_mnist": ("vision", "ResnetMnist"),
    "digits_transformer": ("vision", "DigitsTransformer"),
    "char_lm_finetune": ("text_lm", "CharLmFinetune"),
    # kinds no training family draws and the test suite lacks (the leave-kinds-out validation suite)
    "friedman_regression": ("heldout", "FriedmanRegression"),
    "lorenz_forecast": ("heldout", "LorenzForecast"),
    "mnist1d_transformer": ("heldout", "Mnist1dTransformer"),
    "mnist1d_lstm": ("heldout", "Mnist1dLstm"),
}


def task_class(name: str) -> type:
    """The Task subclass of a task kind; ValueError naming the known kinds for another name."""
    if name not in KINDS:
        raise ValueError(f"unknown task '{name}'; known: {', '.join(sorted(KINDS))}")
    module, cls = KINDS[name]
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def __getattr__(name: str):
    if name == "TASKS":  # {name: Task subclass}, every kind imported
        return {kind: task_class(kind) for kind in KINDS}
    if name == "Task":
        from lhopt_cli.tasks.base import Task

        return Task
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


HELDOUT_KINDS = ("friedman_regression", "lorenz_forecast", "mnist1d_transformer", "mnist1d_lstm")


def build_task(cfg) -> "Task":
    """The Task for a task config; the config's `name` picks the class. Its data is generated
    (and its weights pretrained) on the runs' thread count, so it is the same in every process."""
    from lhopt_cli.support.threads import run_threads

    with run_threads():
        return task_class(cfg["name"])(cfg)


__all__ = ["HELDOUT_KINDS", "KINDS", "TASKS", "Task", "build_task", "task_class"]
