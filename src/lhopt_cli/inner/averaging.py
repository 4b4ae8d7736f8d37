"""An optimizer evaluated at the average of its iterates, as DoG's authors recommend.

Ivgi, Hinder and Carmon 2023, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size
Schedule" (ICML), section 3: DoG and L-DoG are used with polynomial decay averaging of the
iterates (Shamir and Zhang 2013), x_bar_t = (1 - (1 + gamma) / (t + gamma)) x_bar_{t-1} +
(1 + gamma) / (t + gamma) x_t with gamma = 8, the averaged weights the ones evaluated. The average
is the dog-optimizer package's PolynomialDecayAverager; this wrapper gives it the train/eval
modes a schedule-free optimizer has, so the engine (inner/loop.py) validates the averaged weights
and trains the raw ones.
"""
from __future__ import annotations

import torch
from torch import nn


class IterateAveraged:
    """`optimizer` over `params` whose eval() puts the averaged weights in place and train() the
    trained ones back (an optimizer's interface otherwise: param_groups, state, zero_grad, step)."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], gamma: float = 8.0):
        from dog import PolynomialDecayAverager

        self.optimizer = optimizer
        self.holder = nn.ParameterList(params)  # the same tensors: the averager reads them as a model
        self.averager = PolynomialDecayAverager(self.holder, gamma=gamma)
        self._trained: list[torch.Tensor] | None = None

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        self.averager.step()
        return loss

    @torch.no_grad()
    def eval(self) -> None:
        """The averaged weights in place of the trained ones (until train())."""
        if self._trained is None:
            self._trained = [p.detach().clone() for p in self.holder]
            for p, averaged in zip(self.holder, self.averager.av_model.parameters()):
                p.copy_(averaged)

    @torch.no_grad()
    def train(self) -> None:
        """The trained weights back in place."""
        if self._trained is not None:
            for p, trained in zip(self.holder, self._trained):
                p.copy_(trained)
            self._trained = None
