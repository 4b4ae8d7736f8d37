"""A PyTorch Lightning callback that lets an lhopt policy drive the run's AdamW.

    from lhopt_cli.integrations.lightning import LhoptCallback
    trainer = L.Trainer(max_steps=2000, callbacks=[LhoptCallback()])   # configure_optimizers: AdamW only
    trainer.fit(module, train_loader, val_loader)

At `on_train_start` the callback attaches a Controller (the bundled policy, or `policy=`) to the
optimizer `configure_optimizers` returned, for `trainer.estimated_stepping_batches` optimizer
steps, with the LightningModule as the model (restarts and the divergence guard restore it).
Every micro-batch's loss is read at `on_before_backward`; at `on_before_optimizer_step` (after
backward and, under mixed precision, after unscaling) the Controller clips the gradient, decides
at its decision points and says whether this update is taken. Validation: the metric named
`monitor` (default "val_loss") is handed to the Controller at the step after each validation;
the sanity check's validation before training (`num_sanity_val_steps=-1`: all of it) is the
one at step 0, the policy's first validation point.
The Controller's state goes into Lightning's checkpoints, so `fit(ckpt_path=...)` with the same
max_steps continues its decisions where they were.
Install with `pip install lhopt-cli[lightning]`.
"""
from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl

from lhopt_cli.loop.controller import Controller
from lhopt_cli.loop.replay import ReplaySchedule
from lhopt_cli.loop.integrations.bridge import ControllerBridge


def _check_trainer(trainer: pl.Trainer, pl_module: pl.LightningModule, who: str) -> int:
    """The run's number of optimizer steps, after refusing what lhopt cannot share (ValueError)."""
    if not pl_module.automatic_optimization:
        raise ValueError(f"{who} needs automatic optimization (call Controller.step yourself in manual loops)")
    if len(trainer.optimizers) != 1:
        raise ValueError(f"{who} drives one AdamW; configure_optimizers returned {len(trainer.optimizers)}")
    if trainer.lr_scheduler_configs:
        raise ValueError(f"{who} sets the learning rate: return the optimizer without an LR scheduler")
    if trainer.gradient_clip_val:
        raise ValueError(f"{who} clips the gradient itself: leave Trainer(gradient_clip_val=...) unset")
    steps = trainer.estimated_stepping_batches
    if not math.isfinite(steps):
        raise ValueError(f"{who} needs the run's number of optimizer steps: set Trainer(max_steps=...)")
    return int(steps)


class LhoptCallback(pl.Callback):
    """Args: policy: a policy file (None: the bundled default); monitor: the logged validation
    metric the Controller reads; controller_kwargs: Controller's (greedy, seed, guard).
    Raises ValueError at on_train_start for a setting lhopt cannot share (several optimizers,
    an LR scheduler, Lightning's gradient clipping, manual optimization) and TypeError for an
    optimizer that is not AdamW-like."""

    def __init__(self, policy: str | Path | None = None, monitor: str = "val_loss", **controller_kwargs):
        self.controller = Controller.from_pretrained(policy, **controller_kwargs)
        self.bridge = ControllerBridge(self.controller)
        self.monitor = monitor
        self._resumed: dict | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        steps = _check_trainer(trainer, pl_module, "LhoptCallback")
        if trainer.global_step > 0 and self._resumed is None:  # the controller would start again at step 0
            raise ValueError(f"LhoptCallback cannot resume from step {trainer.global_step}: the checkpoint holds no "
                             "controller state (saved without LhoptCallback); start the run anew")
        self.bridge.attach(trainer.optimizers[0], steps, pl_module)
        if self._resumed is not None:  # fit(ckpt_path=...): continue the controller where it was
            self.controller.load_state_dict(self._resumed)
            self._resumed = None

    def state_dict(self) -> dict:
        """The Controller's state (Controller.state_dict), saved in Lightning's checkpoints."""
        return {"controller": self.controller.state_dict()} if self.controller.optimizer is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Kept until on_train_start attaches the Controller to the restored optimizer; a run
        resumed with another max_steps is refused there (ValueError from load_state_dict)."""
        self._resumed = state_dict.get("controller")

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss) -> None:
        # Lightning divides each micro-batch's loss by accumulate_grad_batches before backward
        self.bridge.record_loss(loss * trainer.accumulate_grad_batches)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        self.bridge.before_update()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking:  # before the first step: the policy's validation at step 0
            if value is not None and trainer.global_step == 0:
                self.bridge.record_validation(value)
            return
        if value is None:  # a validation ran but logged no `monitor`: the Controller would never see one
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise ValueError(f"LhoptCallback(monitor={self.monitor!r}): the validation logged no such metric "
                             f"(logged: {logged}); pass monitor= the name your validation_step logs")
        self.bridge.record_validation(value)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.bridge.detach()


class ReplayCallback(pl.Callback):
    """A schedule file (`lhopt evaluate`'s schedule_<task>_s<seed>.json or
    Controller.write_schedule's) replayed on the run's AdamW: before each optimizer step the
    hyperparameters of the step's progress, and the gradient clipped at the file's clip fraction.
    No policy runs. The replay's state goes into Lightning's checkpoints.

        trainer = L.Trainer(max_steps=20000, callbacks=[ReplayCallback("schedule.json")])

    Raises ScheduleFileError for a file that is not a schedule (at construction) and ValueError
    at on_train_start for the settings LhoptCallback refuses."""

    def __init__(self, schedule: str | Path | dict):
        from lhopt_cli.loop.schedule_file import read_schedule

        self.schedule = schedule if isinstance(schedule, dict) else read_schedule(schedule)
        self.replay: ReplaySchedule | None = None
        self._resumed: dict | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        steps = _check_trainer(trainer, pl_module, "ReplayCallback")
        self.replay = ReplaySchedule(trainer.optimizers[0], self.schedule, steps)
        if self._resumed is not None:
            self.replay.load_state_dict(self._resumed)
            self._resumed = None

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        self.replay.seek(min(trainer.global_step, self.replay.total_steps - 1))
        self.replay.clip_gradients()

    def state_dict(self) -> dict:
        return {"replay": self.replay.state_dict()} if self.replay is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resumed = state_dict.get("replay")
