"""Tabular data: real tables shipped with statsmodels, a classifier and a regression (test-suite
kinds), and generated classification tables (a training-family kind, synthetic_tabular).

fair_tabular: the Fair (1978) affairs survey, 6,366 women; predict whether affairs > 0 from 8
columns. randhie_regression: the RAND health insurance experiment, 20,190 person-years;
predict log(1 + outpatient visits) from 9 columns (mean squared error). Columns are
standardised with the training split's statistics; the split is fixed (seed 0), 80 / 20.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lhopt_cli.tasks.base import ArrayClassificationTask, ArrayRegressionTask, in_order
from lhopt_cli.tasks.data import statsmodels_table
from lhopt_cli.tasks.vision import mlp


def _split(x: np.ndarray, y: np.ndarray, valid_fraction: float = 0.2) -> tuple[torch.Tensor, ...]:
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(len(x) * (1 - valid_fraction))
    train, valid = order[:cut], order[cut:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-8
    x = ((x - mean) / std).astype(np.float32)
    return torch.from_numpy(x[train]), torch.from_numpy(y[train]), torch.from_numpy(x[valid]), torch.from_numpy(y[valid])


class FairTabular(ArrayClassificationTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        table = statsmodels_table("fair")
        x = table.drop(columns="affairs").to_numpy(np.float64)
        y = (table["affairs"].to_numpy() > 0).astype(np.int64)
        self.x_train, self.y_train, self.x_valid, self.y_valid = _split(x, y)
        self._limit_valid()

    def build_model(self) -> nn.Module:
        return mlp(self.x_train.shape[1], self.cfg.hidden, 2, self.cfg.activation, self.cfg.norm)


class RandhieRegression(ArrayRegressionTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        table = statsmodels_table("randhie")
        x = table.drop(columns="mdvis").to_numpy(np.float64)
        y = np.log1p(table["mdvis"].to_numpy(np.float64)).astype(np.float32)[:, None]
        self.x_train, self.y_train, self.x_valid, self.y_valid = _split(x, y)
        self._limit_valid()

    def build_model(self) -> nn.Module:
        return mlp(self.x_train.shape[1], self.cfg.hidden, 1, self.cfg.activation, self.cfg.norm)


class SyntheticTabular(ArrayClassificationTask):
    """An MLP classifier of scikit-learn's `make_classification` data (generated): `classes`
    clusters per class on `informative` of `features` columns (raised to what the classes
    need), a share `flip` of labels flipped; columns standardised with the training split's statistics.
    With `pretrain_steps` > 0 the table is drawn with up to 16,000 more rows from the same generator,
    which only the pretraining sees (tasks/pretrain.py): a checkpoint trained on the same problem,
    then fine-tuned for one epoch on the training rows."""

    def __init__(self, cfg):
        super().__init__(cfg)
        from sklearn.datasets import make_classification

        c = self.cfg
        n_train, n_valid = int(c.num_train), int(c.num_valid)
        classes = int(c.classes)
        # make_classification needs 2 * classes clusters to fit in the 2^informative hypercube corners
        informative = max(int(c.informative), math.ceil(math.log2(2 * classes)))
        features = max(int(c.features), informative)
        pretrain_steps = int(c.get("pretrain_steps") or 0)
        n_pretrain = max(int(c.batch_size), min(16_000, pretrain_steps * int(c.batch_size))) if pretrain_steps > 0 else 0
        x, y = make_classification(n_train + n_valid + n_pretrain, n_features=features, n_informative=informative,
                                   n_redundant=0, n_classes=classes, n_clusters_per_class=2,
                                   flip_y=float(c.flip), random_state=int(c.data_seed))
        mean, std = x[:n_train].mean(0), x[:n_train].std(0) + 1e-8
        x = torch.from_numpy(((x - mean) / std).astype(np.float32))
        y = torch.from_numpy(y.astype(np.int64))
        self.x_train, self.y_train = x[:n_train], y[:n_train]
        self.x_valid, self.y_valid = x[n_train:n_train + n_valid], y[n_train:n_train + n_valid]
        self.x_pretrain, self.y_pretrain = x[n_train + n_valid:], y[n_train + n_valid:]
        self._limit_valid()

    def pretrain_batches(self):
        """The rows drawn for pretraining only, in batches of `batch_size` (tasks/pretrain.py)."""
        return in_order(self.x_pretrain, self.y_pretrain, int(self.cfg.batch_size))

    def build_model(self) -> nn.Module:
        return mlp(self.x_train.shape[1], self.cfg.hidden, int(self.cfg.classes), self.cfg.activation, self.cfg.norm)
