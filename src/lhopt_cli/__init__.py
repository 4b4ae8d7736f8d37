"""lhopt: learned optimizer-hyperparameter control (LHOPT) for torch's AdamW."""

__all__ = ["Controller", "ControllerMisuseWarning", "LhoptAdamW", "PolicyFileError", "ProtocolError", "ReplaySchedule",
           "ScheduleFileError", "default_policy_path"]


def __getattr__(name: str):
    # imported on first use, so `lhopt --help` does not pay for torch
    if name == "LhoptAdamW":
        from lhopt_cli.loop.adamw import LhoptAdamW

        return LhoptAdamW
    if name == "ReplaySchedule":
        from lhopt_cli.loop.replay import ReplaySchedule

        return ReplaySchedule
    if name == "ScheduleFileError":
        from lhopt_cli.loop.schedule_file import ScheduleFileError

        return ScheduleFileError
    if name in __all__:
        from lhopt_cli.loop import controller

        return getattr(controller, name)
    raise AttributeError(name)
