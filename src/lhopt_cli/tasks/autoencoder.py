"""Autoencoders (mean squared error): natural-image patches (a test-suite kind) and MNIST digits
(a training-family kind).

8x8 grayscale patches cut at seeded random places; the training images and the validation
images are different photographs. An MLP encoder narrows to `code` units and a decoder
reconstructs the patch (mean squared error).
"""
from __future__ import annotations

import torch
from torch import nn

from lhopt_cli.tasks.base import ArrayRegressionTask
from lhopt_cli.tasks.data import GRAY_IMAGES, image_patches
from lhopt_cli.tasks.vision import _mnist_split, mlp

VALID_IMAGES = ("camera", "horse")  # never seen in training


class PatchAutoencoder(ArrayRegressionTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        size, per_image = int(self.cfg.patch), int(self.cfg.patches_per_image)
        train_images = tuple(name for name in GRAY_IMAGES if name not in VALID_IMAGES)
        train = torch.from_numpy(image_patches(size, per_image, train_images, seed=0))
        valid = torch.from_numpy(image_patches(size, per_image // 4, VALID_IMAGES, seed=1))
        self.x_train, self.y_train, self.x_valid, self.y_valid = train, train, valid, valid
        self._limit_valid()

    def build_model(self) -> nn.Module:
        side = int(self.cfg.patch) ** 2
        widths = list(self.cfg.hidden)
        return nn.Sequential(mlp(side, widths, int(self.cfg.code), self.cfg.activation),
                             mlp(int(self.cfg.code), widths[::-1], side, self.cfg.activation))


class MnistAutoencoder(ArrayRegressionTask):
    """An MLP autoencoder of MNIST-5k digits (784 pixels in [0, 1]) through a `code`-unit bottleneck,
    mean squared error on the pixels; the fixed 4,000 / 1,000 split of the MNIST-5k tasks."""

    def __init__(self, cfg):
        super().__init__(cfg)
        x_train, _, x_valid, _ = _mnist_split()
        self.x_train, self.y_train, self.x_valid, self.y_valid = x_train, x_train, x_valid, x_valid
        self._limit_valid()

    def build_model(self) -> nn.Module:
        widths = list(self.cfg.hidden)
        return nn.Sequential(mlp(784, widths, int(self.cfg.code), self.cfg.activation),
                             mlp(int(self.cfg.code), widths[::-1], 784, self.cfg.activation))
