"""A Hugging Face transformers TrainerCallback that lets an lhopt policy drive the Trainer's AdamW.

    from lhopt_cli.integrations.hf import LhoptTrainerCallback
    args = TrainingArguments(..., optim="adamw_torch", max_grad_norm=0.0)   # lhopt clips
    Trainer(model=model, args=args, train_dataset=ds, callbacks=[LhoptTrainerCallback()]).train()

At `on_train_begin` the callback attaches a Controller (the bundled policy, or `policy=`) to the
AdamW inside the Trainer's optimizer, for `state.max_steps` optimizer steps, with the model
(restarts and the divergence guard restore it). The loss of every micro-batch is read off the
model's output (`outputs["loss"]`, what Trainer.compute_loss uses) by a forward hook; at
`on_pre_optimizer_step` the Controller clips the gradient, decides at its decision points and
says whether the coming update is taken. It also writes its hyperparameters into the optimizer
before every update, so the Trainer's LR scheduler cannot override them; the `learning_rate`
the Trainer logs is the lr each update used (the policy's, times its protocol's lr decay; the
policy's own values are in `controller.history`). The policy starts from the scheduler's base lr,
warmup or not. An evaluation's `eval_loss` reaches the Controller at the next step. Each
checkpoint the Trainer saves gets the controller's state beside it (`lhopt_controller.pt`), so
`trainer.train(resume_from_checkpoint=...)` continues the controller where it was: the decisions
are the uninterrupted run's. Install with `pip install lhopt-cli[hf]`.
"""
from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from lhopt_cli.loop.controller import Controller
from lhopt_cli.loop.replay import ReplaySchedule
from lhopt_cli.loop.integrations.bridge import ControllerBridge

CONTROLLER_FILE = "lhopt_controller.pt"  # the controller's state, in each checkpoint folder the Trainer saves


def _at_base_lr(optimizer):
    """The torch optimizer inside the Trainer's (accelerate wraps it), its groups set back to
    their base lr: a warmup scheduler has already set its first value (often 0)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    for group in inner.param_groups:
        if "initial_lr" in group:
            group["lr"] = group["initial_lr"]
    return inner


class LhoptTrainerCallback(TrainerCallback):
    """Args: policy: a policy file (None: the bundled default); controller_kwargs: Controller's
    (greedy, seed, guard). Raises ValueError at on_train_begin for settings lhopt cannot share
    (the Trainer's own clipping, fp16's gradient scaler), for a resume from a checkpoint saved
    without the callback, and TypeError for an optimizer that is not AdamW-like."""

    def __init__(self, policy: str | Path | None = None, **controller_kwargs):
        self.controller = Controller.from_pretrained(policy, **controller_kwargs)
        self.bridge = ControllerBridge(self.controller)
        self._hook = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if args.max_grad_norm and args.max_grad_norm > 0:
            raise ValueError("LhoptTrainerCallback clips the gradient itself: set TrainingArguments(max_grad_norm=0)")
        if args.fp16:
            raise ValueError("LhoptTrainerCallback needs unscaled gradients before the update: use bf16 or fp32")
        resumed = self._resumed_state(args, state) if state.global_step > 0 else None
        self.bridge.attach(_at_base_lr(optimizer), int(state.max_steps), model)
        if resumed is not None:  # resume_from_checkpoint: continue the controller where it was
            self.controller.load_state_dict(resumed)
        self._hook = model.register_forward_hook(self._read_loss)

    @staticmethod
    def _resumed_state(args, state) -> dict:
        """The controller's state saved beside the checkpoint the Trainer resumes from (its
        checkpoint-<step> folder in output_dir, or args.resume_from_checkpoint). ValueError (one
        line) where there is none: a checkpoint saved without this callback."""
        from lhopt_cli.control.checkpoint import DamagedFile, load_verified

        folders = [Path(args.output_dir) / f"checkpoint-{state.global_step}"]
        if isinstance(args.resume_from_checkpoint, str):
            folders.insert(0, Path(args.resume_from_checkpoint))
        for folder in folders:
            path = folder / CONTROLLER_FILE
            if path.is_file():
                try:  # CRC-checked, tensors and plain data only, as policy files are read
                    saved = load_verified(path)
                except DamagedFile as err:
                    raise ValueError(f"{path}: damaged or not a controller state ({str(err).split(': ', 1)[-1]}); "
                                     "resume from another checkpoint, or start the run anew") from None
                if not isinstance(saved, dict) or saved.get("global_step") != state.global_step:
                    raise ValueError(f"{path}: not the controller's state at step {state.global_step}; resume from "
                                     "the checkpoint folder it was saved in")
                return saved["controller"]
        raise ValueError(f"LhoptTrainerCallback cannot resume from step {state.global_step}: no {CONTROLLER_FILE} in "
                         f"{' or '.join(str(f) for f in folders)} (a checkpoint saved without the callback); "
                         "start the run anew")

    def on_save(self, args, state, control, **kwargs):
        # the Trainer has just written output_dir/checkpoint-<step>: the controller's state goes beside it
        from lhopt_cli.control.checkpoint import atomic_save

        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and self.controller.optimizer is not None:
            atomic_save({"global_step": state.global_step, "controller": self.controller.state_dict()},
                        folder / CONTROLLER_FILE)

    def _read_loss(self, module, inputs, outputs) -> None:
        if not module.training:
            return
        loss = outputs.get("loss") if hasattr(outputs, "get") else None
        if loss is None:
            raise RuntimeError("LhoptTrainerCallback reads the loss from the model's outputs['loss']: "
                               "return it (pass labels) during training")
        self.bridge.record_loss(loss)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.bridge.before_update()

    def on_optimizer_step(self, args, state, control, lr_scheduler=None, **kwargs):
        # the Trainer logs `learning_rate` from its scheduler's last value, read right after the
        # update: make that the lr the update used (the policy's, decayed), not the overridden schedule
        if lr_scheduler is not None and hasattr(lr_scheduler, "_last_lr"):
            lr_scheduler._last_lr = [group["lr"] for group in self.controller.optimizer.param_groups]

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            self.bridge.record_validation(metrics["eval_loss"])

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
        self.bridge.detach()


class ReplayTrainerCallback(TrainerCallback):
    """A schedule file replayed on the Trainer's AdamW: before every update the hyperparameters
    of the step's progress (over the Trainer's LR scheduler, as LhoptTrainerCallback does) and
    the gradient clipped at the file's clip fraction. No policy runs.

        args = TrainingArguments(..., optim="adamw_torch", max_grad_norm=0.0)   # the replay clips
        Trainer(..., args=args, callbacks=[ReplayTrainerCallback("schedule.json")]).train()

    Raises ScheduleFileError for a file that is not a schedule (at construction), ValueError at
    on_train_begin for the Trainer's own clipping or fp16's gradient scaler."""

    def __init__(self, schedule: str | Path | dict):
        from lhopt_cli.loop.schedule_file import read_schedule

        self.schedule = schedule if isinstance(schedule, dict) else read_schedule(schedule)
        self.replay: ReplaySchedule | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if args.max_grad_norm and args.max_grad_norm > 0:
            raise ValueError("ReplayTrainerCallback clips the gradient itself: set TrainingArguments(max_grad_norm=0)")
        if args.fp16:
            raise ValueError("ReplayTrainerCallback needs unscaled gradients before the update: use bf16 or fp32")
        self.replay = ReplaySchedule(_at_base_lr(optimizer), self.schedule, int(state.max_steps))

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.replay.seek(min(state.global_step, self.replay.total_steps - 1))
        self.replay.clip_gradients()
