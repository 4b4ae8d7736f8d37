"""The actor-critic: MLP -> layer-normed LSTM -> MLP, one categorical head per action group.

Inputs are normalised by a running mean/variance kept in the module's buffers (so a policy
file carries them) and clipped to [-obs_clip, obs_clip] (paper: 2). An optional `action_mask`
reads the raw observation and rules out choices that cannot act (a load from an empty
register): they are never sampled nor chosen greedily, and the log-probabilities PPO trains on
are those of the masked distribution.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from lhopt_cli.control.actions import NVEC
from lhopt_cli.control.features import FEATURE_NAMES, feasible_actions
from lhopt_cli.control.privileged import PRIVILEGED_NAMES


MASKED_LOGIT = -1e9  # a ruled-out choice: probability exactly 0, entropies stay finite


def layer_init(layer: nn.Linear, std: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class RunningMeanStd(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.double().reshape(-1, self.mean.numel())
        batch_mean, batch_var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total)
        self.count.copy_(total)


class RecurrentActorCritic(nn.Module):
    def __init__(self, obs_dim: int, nvec: list[int], hidden: int = 64, obs_clip: float = 2.0,
                 prior_logits: list[float] | None = None,
                 action_mask: Callable[[torch.Tensor], torch.Tensor] | None = None, privileged_dim: int = 0):
        """`prior_logits` (one per choice, all heads concatenated) initialise the actor's output
        bias, so the untrained policy prefers those choices; None: uniform. `action_mask(obs)`
        maps raw observations (B, obs_dim) to a (B, sum(nvec)) bool tensor of feasible choices.
        `privileged_dim` > 0: the critic also reads that many privileged inputs (control/
        privileged.py; normalised by their own running statistics), which the actor never sees."""
        super().__init__()
        self.privileged_dim = int(privileged_dim)
        self.nvec, self.hidden, self.obs_clip = list(nvec), hidden, obs_clip
        self.action_mask = action_mask
        self.obs_rms = RunningMeanStd(obs_dim)
        self.encoder = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh())
        self.lstm = nn.LSTM(hidden, hidden)
        for name, param in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0)
            elif "weight" in name:
                nn.init.orthogonal_(param, 1.0)
        self.norm = nn.LayerNorm(hidden)
        self.actor = nn.Sequential(layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
                                   layer_init(nn.Linear(hidden, sum(self.nvec)), std=0.01))
        if prior_logits is not None:
            with torch.no_grad():
                self.actor[-1].bias.copy_(torch.as_tensor(prior_logits, dtype=torch.float32))
        self.critic = nn.Sequential(layer_init(nn.Linear(hidden + self.privileged_dim, hidden)), nn.Tanh(),
                                    layer_init(nn.Linear(hidden, 1), std=1.0))
        if self.privileged_dim:
            self.privileged_rms = RunningMeanStd(self.privileged_dim)

    def value(self, hidden: torch.Tensor, privileged: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1) values from the LSTM's (B, hidden) output and, for a privileged critic, the
        (B, privileged_dim) privileged inputs (missing: their running mean)."""
        if not self.privileged_dim:
            return self.critic(hidden)
        if privileged is None:
            extra = torch.zeros(hidden.shape[0], self.privileged_dim)
        else:
            rms = self.privileged_rms
            scaled = (privileged.reshape(-1, self.privileged_dim).double() - rms.mean) / torch.sqrt(rms.var + 1e-8)
            extra = scaled.clamp(-5.0, 5.0).float()
        return self.critic(torch.cat([hidden, extra], dim=-1))

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, batch, self.hidden), torch.zeros(1, batch, self.hidden)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        scaled = (obs.double() - self.obs_rms.mean) / torch.sqrt(self.obs_rms.var + 1e-8)
        return scaled.clamp(-self.obs_clip, self.obs_clip).float()

    def get_states(self, obs, state, done):
        """obs (T*B, D), done (T*B,): the LSTM over T steps, its state reset where done."""
        hidden = self.encoder(self.normalize(obs))
        batch = state[0].shape[1]
        hidden, done = hidden.reshape(-1, batch, self.hidden), done.reshape(-1, batch)
        if not bool(done[1:].any()):  # no episode ends inside: one LSTM call over the sequence
            keep = (1.0 - done[0]).view(1, -1, 1)
            out, state = self.lstm(hidden, (keep * state[0], keep * state[1]))
            return self.norm(torch.flatten(out, 0, 1)), state
        outputs = []
        for h, d in zip(hidden, done):
            keep = (1.0 - d).view(1, -1, 1)
            out, state = self.lstm(h.unsqueeze(0), (keep * state[0], keep * state[1]))
            outputs.append(out)
        return self.norm(torch.flatten(torch.cat(outputs), 0, 1)), state

    def get_value(self, obs, state, done, privileged: torch.Tensor | None = None) -> torch.Tensor:
        hidden, _ = self.get_states(obs, state, done)
        return self.value(hidden, privileged)

    def logits(self, hidden: torch.Tensor, obs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, sum(nvec)) logits of all heads, infeasible choices (action_mask(obs) & mask) ruled out."""
        logits = self.actor(hidden)
        feasible = self.action_mask(obs.reshape(-1, obs.shape[-1])) if self.action_mask is not None else None
        if mask is not None:
            feasible = mask if feasible is None else feasible & mask
        return logits if feasible is None else logits.masked_fill(~feasible, MASKED_LOGIT)

    def distributions(self, hidden: torch.Tensor, obs: torch.Tensor | None = None,
                      mask: torch.Tensor | None = None) -> list[Categorical]:
        logits = self.actor(hidden) if obs is None else self.logits(hidden, obs, mask)
        return [Categorical(logits=part) for part in torch.split(logits, self.nvec, dim=-1)]

    def get_action_and_value(self, obs, state, done, action=None, greedy: bool = False,
                             generator: torch.Generator | None = None, privileged: torch.Tensor | None = None,
                             with_distributions: bool = False):
        """Sampled (or given) actions with their log-probabilities, entropies and values, and the
        LSTM state; with `generator`, sampling draws from it instead of torch's global stream.
        `privileged`: the privileged critic's extra inputs (T*B, privileged_dim).
        `with_distributions`: the heads' Categoricals are returned too, as a sixth item."""
        hidden, state = self.get_states(obs, state, done)
        dists = self.distributions(hidden, obs)
        if action is None and generator is not None:
            action = torch.stack([torch.multinomial(d.probs, 1, generator=generator).squeeze(-1) for d in dists], -1)
        elif action is None:
            action = torch.stack([d.probs.argmax(-1) if greedy else d.sample() for d in dists], dim=-1)
        logprob = torch.stack([d.log_prob(a) for d, a in zip(dists, action.unbind(-1))], -1).sum(-1)
        entropy = torch.stack([d.entropy() for d in dists], -1).sum(-1)
        value = self.value(hidden, privileged)
        return (action, logprob, entropy, value, state, dists) if with_distributions else (action, logprob, entropy, value, state)

    @torch.no_grad()
    def act(self, obs, state, done, greedy: bool = False, generator: torch.Generator | None = None,
            mask: torch.Tensor | None = None):
        """Choices for acting (not training): argmax, or sampled from a private generator so the
        caller's global RNG stream is untouched. `mask` (B, sum(nvec)) rules out more choices."""
        hidden, state = self.get_states(obs, state, done)
        choices = []
        for logits in torch.split(self.logits(hidden, obs, mask), self.nvec, dim=-1):  # the heads' Categoricals
            if greedy:
                choices.append(logits.argmax(-1))
            else:
                choices.append(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1))
        return torch.stack(choices, dim=-1), state


def lhopt_agent(hidden: int = 64, obs_clip: float = 2.0, prior_logits: list[float] | None = None,
                privileged_critic: bool = False) -> RecurrentActorCritic:
    """The LHOPT actor-critic over FEATURE_NAMES and the action heads, loads from empty
    registers masked; with `privileged_critic`, the critic also reads PRIVILEGED_NAMES."""
    return RecurrentActorCritic(len(FEATURE_NAMES), list(NVEC), hidden, obs_clip, prior_logits,
                                action_mask=feasible_actions,
                                privileged_dim=len(PRIVILEGED_NAMES) if privileged_critic else 0)
