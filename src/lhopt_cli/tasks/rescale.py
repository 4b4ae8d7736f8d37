"""Scale augmentation: a task's network trained through the reparameterisation w = s * w'.

The optimizer sees w' (the module's parameters hold w / s at the start, so the function is the same
as without the scale); the forward pass uses s * w'. Under Adam's normalised update a step of
size lr in w' is a step of size s * lr in w, so the best AdamW learning rate moves by exactly 1/s
while what the network can represent does not change (decoupled weight decay and eps aside).
Meta-training on such rescaled instances (docs/method.md, "Scale augmentation") asks the policy to
find the learning rate up or down, from unitless features alone.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


class Rescaled(nn.Module):
    """`inner` trained through w = scale * w'. Its parameters (named `inner.<name>`) are w';
    buffers are untouched. Raises ValueError for a scale that is not finite and positive."""

    def __init__(self, inner: nn.Module, scale: float):
        super().__init__()
        scale = float(scale)
        if not (scale > 0 and scale < float("inf")):
            raise ValueError(f"task.param_scale must be a finite positive number (got {scale})")
        self.inner, self.scale = inner, scale
        with torch.no_grad():
            for p in inner.parameters():
                p.div_(scale)

    def forward(self, *args, **kwargs):
        # named_parameters() also yields tensors a caller swapped in (the batched engine's
        # functional_call over members), so the scale applies to whatever w' is current
        scaled = {name: p * self.scale for name, p in self.inner.named_parameters()}
        return functional_call(self.inner, scaled, args, kwargs)
