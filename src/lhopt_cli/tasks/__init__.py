"""One-epoch training tasks, built from a task config (conf/task/)."""
from __future__ import annotations

from .algorithmic import Algorithmic
from .base import Task
from .mnist1d import Mnist1dConv
from .nqm import Nqm
from .text_lm import CharLm
from .vision import CnnMnist, MlpDigits, MlpMnist

TASKS: dict[str, type[Task]] = {
    "algorithmic": Algorithmic,
    "mlp_mnist": MlpMnist,
    "mlp_digits": MlpDigits,
    "cnn_mnist": CnnMnist,
    "mnist1d_conv": Mnist1dConv,
    "char_lm": CharLm,
    "nqm": Nqm,
}


def build_task(cfg) -> Task:
    """The Task for a task config; the config's `name` picks the class."""
    name = cfg["name"]
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}'; known: {', '.join(sorted(TASKS))}")
    return TASKS[name](cfg)


__all__ = ["TASKS", "Task", "build_task"]
