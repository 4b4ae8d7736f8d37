"""lhopt: learned optimizer-hyperparameter control (LHOPT) for torch's AdamW."""

__all__ = ["Controller", "PolicyFileError", "ProtocolError", "default_policy_path"]


def __getattr__(name: str):
    # imported on first use, so `lhopt --help` does not pay for torch
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(name)
