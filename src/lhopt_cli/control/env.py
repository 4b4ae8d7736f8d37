"""The LHOPT environment: one step is one decision interval of an inner training run.

`VecLhoptEnv` steps many episodes at once, one member each of the batched engine on the same
sampled task instance (gymnasium's vector-env interface, autoreset in the same step).
`LhoptEnv` is the single-episode gymnasium.Env over it (it passes gymnasium's env checker).

Runs are observed by the observation protocol (control/protocol.py), as `Controller` observes
a user's loop: decisions at `decision_steps`, statistics every `stats_every` steps and at the
last step of every interval, the validation loss at step 0 and at the task's eval steps shown
to the next decision, and the step right after a load spent without an update (its gradient
belonged to the replaced weights in a user's loop).
"""
from __future__ import annotations

import json
import math
from dataclasses import replace

import gymnasium as gym
import numpy as np

from lhopt_cli.inner import HParams, Hook, train_one_epoch
from lhopt_cli.inner.batched import BatchedRun
from lhopt_cli.tasks import build_task
from lhopt_cli.tasks.families import TaskFamily
from lhopt_cli.control.actions import BOUNDS, EVAL_START, NVEC, apply_action, lr_label, randomized_start, restart_kind
from lhopt_cli.control.features import FEATURE_NAMES, FeatureTracker, Register, to_vector
from lhopt_cli.control.privileged import privileged_vector
from lhopt_cli.control.protocol import ObservationProtocol, decision_steps
from lhopt_cli.control.reference import ReferenceCache, ReferenceSweep, best_setting, curve_on
from lhopt_cli.control.reward import PowerLawFit, envelope_log_speedup, fit_reference, log_speedup_reward

REFERENCE = HParams()  # torch's AdamW defaults, no clipping


class _Recorder(Hook):
    """Training losses since the last decision and the latest validation loss of one member."""

    def __init__(self):
        self.train: list[float] = []
        self.valid = math.nan
        self.valid_is_new = False  # a validation since the last decision

    def after_step(self, run, train_loss: float) -> None:
        self.train.append(train_loss)

    def on_eval(self, run, valid_loss: float) -> None:
        self.valid, self.valid_is_new = valid_loss, True


class VecLhoptEnv:
    """`num_envs` episodes in lock-step on one task instance, reused for `reuse` episode groups."""

    def __init__(self, family: TaskFamily, num_envs: int, seed: int = 0, decisions: tuple[int, int] = (16, 128),
                 protocol: dict | None = None, reuse: int = 2, randomize_start: bool = True,
                 start_lr_scale: float = 1.0, autoreset: bool = True, fixed: dict | None = None,
                 reward_extrapolation: float = 2.0, reference_sweep: ReferenceSweep | None = None,
                 eval_start_share: float = 0.0, guard: bool = False, start_around_best: float = 0.0,
                 label_lr: bool = False):
        """`decisions`: the range a meta-training episode's decision count is drawn from;
        `protocol`: ObservationProtocol fields (defaults for the others). `fixed` = {"task": cfg,
        "seeds": [...]} runs that exact episode (evaluation) with the protocol's decision count:
        start at EVAL_START, no reward (no reference run).

        The reward: with `reference_sweep` None, log(t_ref / T) over AdamW at its defaults
        (power law, extrapolated up to `reward_extrapolation` x T: the paper's); with a sweep, the
        log speedup over the sweep's envelope (control/reference.py), and then every member of an
        instance's episodes runs with the instance's one seed, the sweep's. `eval_start_share`: the
        share of members (randomised starts only) that start at EVAL_START, as evaluation does.
        `guard`: the divergence guard (inner/guard.py), a guard point offered at every decision.
        `start_around_best` = k > 1 (needs `reference_sweep`): a randomised start's lr is drawn
        log-uniform from best / k to best x k around the instance's best sweep lr (best_setting),
        so moving the lr down earns reward as often as moving it up; 0: around AdamW's default
        lr (randomized_start). `label_lr` (needs `reference_sweep`): every observation comes with
        `lr_labels` (num_envs,), the lr choice a teacher would make at that decision (lr_label), or
        -1 where there is none (a frozen member, an instance whose sweep all diverged, a fixed
        episode). Raises ValueError for a k in (0, 1] or either without a sweep."""
        self.family, self.num_envs = family, num_envs
        self.protocol = ObservationProtocol.from_dict(protocol or {}, complete=False)
        self.decisions, self.reuse = decisions, reuse
        self.randomize_start, self.start_lr_scale, self.autoreset = randomize_start, start_lr_scale, autoreset
        self.reward_extrapolation = reward_extrapolation  # the paper's 2: a speedup over 2x earns no more
        self.rng = np.random.default_rng(seed)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (len(FEATURE_NAMES),), np.float32)
        self.single_action_space = gym.spaces.MultiDiscrete(NVEC)
        self._uses_left = 0
        self._references: dict[str, PowerLawFit] = {}
        self.sweep_cache = ReferenceCache(reference_sweep) if reference_sweep is not None else None
        self.eval_start_share = float(eval_start_share)
        self.start_around_best = float(start_around_best)
        if self.start_around_best != 0 and not (self.start_around_best > 1 and reference_sweep is not None):
            raise ValueError("start_around_best needs a reference sweep (reward.reference=sweep) and a spread "
                             f"above 1, or 0 for off (got {start_around_best!r})")
        self.label_lr = bool(label_lr)
        if self.label_lr and reference_sweep is None:
            raise ValueError("lr labels need a reference sweep (reward.reference=sweep): the best lr comes from the sweep")
        self.lr_labels = np.full(num_envs, -1, dtype=np.int64)
        self.label_target: float | None = None  # this episode's teacher lr (the instance's best)
        self.guard = bool(guard)
        self.instance: dict | None = None
        self.instance_seed: int | None = None  # with a sweep: the seed of every run on this instance
        self.fixed = fixed

    # --- state that a checkpoint keeps (episodes start fresh after it) ------------------------
    def next_episode_state(self) -> dict:
        """The state now, between episodes (autoreset=False): loading it and calling reset()
        starts the episode that would come next."""
        return {"rng": json.dumps(self.rng.bit_generator.state), "uses_left": self._uses_left,
                "instance": json.dumps(self.instance), "instance_seed": self.instance_seed}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])
        self._uses_left = int(state["uses_left"])
        instance = json.loads(state["instance"])
        if instance is not None and instance != self.instance:  # the same instance keeps its built task
            self.task = build_task(instance)
        self.instance = instance
        self.instance_seed = state.get("instance_seed")

    # --- episodes -----------------------------------------------------------------------
    def reference(self) -> PowerLawFit:
        key = json.dumps(self.instance, sort_keys=True)
        if key not in self._references:
            curve = train_one_epoch(self.task, 0, hparams=REFERENCE).curve
            self._references[key] = fit_reference([r["step"] for r in curve], [r["valid_loss"] for r in curve],
                                                  self.task.total_steps, self.reward_extrapolation)
        return self._references[key]

    def _start_hparams(self, best_lr: float | None = None) -> HParams:
        """One member's start: the evaluation start (scaled), a share of them kept there, the rest
        randomised around it, or with `best_lr` their lr drawn around the instance's best."""
        base = replace(EVAL_START, lr=EVAL_START.lr * self.start_lr_scale)
        if not self.randomize_start:
            return base
        if self.eval_start_share > 0 and self.rng.random() < self.eval_start_share:
            return base
        start = randomized_start(self.rng, base)
        if best_lr is None:
            return start
        spread = math.log(self.start_around_best)
        return replace(start, lr=min(max(best_lr * math.exp(self.rng.uniform(-spread, spread)), BOUNDS["lr"][0]),
                                     BOUNDS["lr"][1]))

    def _best_lr(self) -> float | None:
        """The instance's best sweep lr when starts are drawn around it or labels point at it (the
        sweep runs now, once per instance and seed, instead of at the episode's end); None otherwise."""
        if not ((self.start_around_best and self.randomize_start) or self.label_lr):
            return None
        _, curves = self.sweep_cache.get(self.instance, self.task, self.instance_seed)
        try:
            return best_setting(self.sweep_cache.sweep, self.task, curves)[0]
        except ValueError:  # every sweep run diverged: no best to start around
            return None

    def sweep_rewards(self, results) -> np.ndarray:
        """Each member's log speedup over the reference sweep's envelope on this instance and seed
        (0 for every member where every sweep run diverged: nothing to measure against)."""
        steps, references = self.sweep_cache.get(self.instance, self.task, self.instance_seed)
        if not any(np.isfinite(r).any() for r in references):
            return np.zeros(len(results))
        return np.array([envelope_log_speedup(steps, curve_on(steps, r.curve), references) for r in results])

    def _new_episode(self) -> np.ndarray:
        if self.fixed is not None:
            if self.instance is None:
                self.instance, self.task = self.fixed["task"], build_task(self.fixed["task"])
            count = self.protocol.decisions
            seeds = [int(s) for s in self.fixed["seeds"]]
            self.starts = [EVAL_START for _ in seeds]
        else:
            if self._uses_left <= 0 or self.instance is None:
                self.instance = self.family.sample(self.rng)
                self.task = build_task(self.instance)
                self._uses_left = self.reuse
                if self.sweep_cache is not None:
                    self.instance_seed = int(self.rng.integers(0, 2**31 - 1))
            self._uses_left -= 1
            count = int(self.rng.integers(self.decisions[0], self.decisions[1] + 1))
            if self.sweep_cache is not None:
                seeds = [self.instance_seed] * self.num_envs
            else:
                seeds = [int(s) for s in self.rng.integers(0, 2**31 - 1, self.num_envs)]
            best_lr = self._best_lr()
            self.label_target = best_lr if self.label_lr else None
            self.starts = [self._start_hparams(best_lr if self.start_around_best else None)
                           for _ in range(self.num_envs)]
        total = self.task.total_steps
        self.boundaries = [0, *decision_steps(total, count, self.protocol.min_interval), total]
        self.interval = 0
        self.recorders = [_Recorder() for _ in range(self.num_envs)]
        self.run = BatchedRun(self.task, seeds, self.recorders, list(self.starts), self.protocol.stats_every,
                              guard=self.guard, lr_decay=self.protocol.lr_decay)
        counted = self.run.trainable_params if self.protocol.parameter_count == "all" else self.task.num_params
        self.trackers = [FeatureTracker(start, counted) for start in self.starts]
        self.restarts: list[tuple[str, int]] = [("none", -1)] * self.num_envs  # what the last decision did
        self.run.begin()
        for recorder, valid in zip(self.recorders, self.run.initial_valid_losses):
            recorder.on_eval(None, valid)  # the first decision sees the validation at step 0
        self._advance()
        return self._observe()

    def _advance(self) -> None:
        self.interval += 1
        until = int(self.boundaries[min(self.interval, len(self.boundaries) - 1)])
        while self.run.step_index < until and not self.run.finished:
            self.run.step(sample_stats=self.run.step_index == until - 1)  # every interval is measured

    @property
    def episode_over(self) -> bool:
        return self.interval >= len(self.boundaries) - 1 or self.run.finished

    def _observe(self) -> np.ndarray:
        progress = self.run.step_index / self.task.total_steps
        rows, privileged = [], []
        for ctx, rec, tracker in zip(self.run.ctx, self.recorders, self.trackers):
            if rec.train:
                train = float(np.mean(rec.train))
            else:  # a frozen (diverged) member shows NaN; an interval without a step, nothing
                train = math.nan if not self.run.active[ctx.index] else None
            privileged.append(privileged_vector(self.instance["name"], self.starts[ctx.index], ctx.hparams,
                                                self.task.total_steps, progress,
                                                self.run.initial_valid_losses[ctx.index], rec.valid, train))
            feats = tracker.features(progress, ctx.stats, ctx.stats_count, train, rec.valid, ctx.hparams,
                                     rec.valid_is_new)
            rows.append(to_vector(feats))
            ctx.stats, ctx.stats_count, rec.train, rec.valid_is_new = {}, 0, [], False
        self.privileged = np.stack(privileged)  # (num_envs, PRIVILEGED): the critic's extra inputs
        self.lr_labels = np.array([lr_label(ctx.hparams.lr, self.label_target)
                                   if self.label_target is not None and self.run.active[ctx.index] and self.fixed is None
                                   else -1 for ctx in self.run.ctx], dtype=np.int64)
        return np.stack(rows)

    def _act(self, actions: np.ndarray) -> None:
        progress = self.run.step_index / self.task.total_steps
        self.restarts = [("none", -1)] * self.num_envs
        for i, (ctx, tracker) in enumerate(zip(self.run.ctx, self.trackers)):
            action = tuple(int(a) for a in actions[i])
            tracker.prev_action = action
            if not self.run.active[i]:
                continue
            ctx.hparams, code = apply_action(ctx.hparams, action)
            kind, register = restart_kind(code)
            if kind == "save":
                tracker.registers[register] = Register(self.run.save_member(i), tracker.last_train, progress)
                self.restarts[i] = (kind, register)
            elif kind == "load" and tracker.registers[register] is not None:
                self.run.load_member(i, tracker.registers[register].state)
                self.run.skip_next_step(i)  # as Controller: in a user's loop this gradient is of the old weights
                self.restarts[i] = (kind, register)
            self.run.set_guard_point(i)
        # what each member runs with from this decision on (a guard return may change it later)
        self.decided = [(ctx.hparams, self.run.guard_restores[i]) for i, ctx in enumerate(self.run.ctx)]

    def final_losses(self) -> list[float]:
        return [r.final_valid_loss for r in self.run.results()]

    def reset(self, seed: int | None = None, options=None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            self._uses_left = 0
        return self._new_episode(), {}

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        actions = np.asarray(actions).reshape(self.num_envs, len(NVEC))
        self._act(actions)
        self._advance()
        obs = self._observe()
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        done = self.episode_over
        info: dict = {}
        if done:
            finals = self.final_losses()
            if self.fixed is None and self.sweep_cache is not None:
                rewards[:] = self.sweep_rewards(self.run.results())
            elif self.fixed is None:
                fit, total = self.reference(), self.task.total_steps
                rewards[:] = [log_speedup_reward(fit, loss, total) for loss in finals]
            info = {"episode_reward": rewards.copy(), "final_valid_loss": np.array(finals),
                    "task": self.instance["name"], "final_lr": np.array([c.hparams.lr for c in self.run.ctx]),
                    "reference_s": self.sweep_cache.seconds if self.sweep_cache is not None else 0.0}
            if self.autoreset:
                obs = self._new_episode()
        terminated = np.full(self.num_envs, done)
        return obs, rewards, terminated, np.zeros(self.num_envs, dtype=bool), info


class LhoptEnv(gym.Env):
    """A single LHOPT episode as a gymnasium.Env (no autoreset)."""

    metadata: dict = {"render_modes": []}

    def __init__(self, family: TaskFamily, **kwargs):
        self.vec = VecLhoptEnv(family, num_envs=1, autoreset=False, **kwargs)
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        obs, info = self.vec.reset(seed=seed)
        return obs[0], info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.vec.step(np.asarray(action)[None])
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}
