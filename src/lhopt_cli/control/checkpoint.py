"""Policy files and training checkpoints: tensors plus plain metadata, loaded weights-only.

A policy file is what people share: the actor-critic's weights (with its input normaliser),
the feature names and action heads it was trained with, its observation protocol
(control/protocol.py) and the config that made it.
"""
from __future__ import annotations

import errno
import zipfile
from pathlib import Path
from typing import Any

import torch

from lhopt_cli.control.actions import HEADS
from lhopt_cli.support.files import atomic_write, not_a_regular_file
from lhopt_cli.control.features import FEATURE_NAMES
from lhopt_cli.control.policy import RecurrentActorCritic, lhopt_agent
from lhopt_cli.control.protocol import ObservationProtocol, ProtocolError

POLICY_FORMAT = "lhopt-policy"
POLICY_VERSION = 1


class PolicyFileError(ValueError):
    pass


class DamagedFile(ValueError):
    """A torch file that is truncated, corrupted or not a torch file (one line)."""


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and a rename; the temporary file is removed when the
    write fails (a full disk leaves nothing behind, the old file stays whole). Raises OSError
    (FileNotFoundError where the folder is missing) whose strerror says why, in one line."""
    try:
        atomic_write(path, lambda tmp: torch.save(obj, tmp))
    except RuntimeError as err:  # torch's writer reports a full disk as a RuntimeError
        raise OSError(errno.EIO, f"could not be written ({str(err).splitlines()[0][:80]}; is the disk full?)",
                      str(path)) from None


def load_verified(path: Path) -> Any:
    """torch.load(weights_only=True) of a file whose zip records all match their CRC32s (torch
    writes them and does not check them on load). Nothing is unpickled beyond tensors and plain
    data. Raises DamagedFile naming the file and what is wrong (a path that is not a regular file too)."""
    path = Path(path)
    reason = not_a_regular_file(path)
    if reason is not None:  # a device, a FIFO or a link to one is never opened: its read has no end
        raise DamagedFile(reason)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        raise DamagedFile(f"{path}: not a torch file, or truncated (no readable zip directory)") from None
    except OSError as err:
        raise DamagedFile(f"{path}: cannot be read ({err.strerror or err})") from None
    if bad is not None:
        raise DamagedFile(f"{path}: damaged (the CRC32 of its record {bad} does not match)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign or unsafe payloads
        raise DamagedFile(f"{path}: not loadable as tensors and plain data ({type(err).__name__})") from None


def save_policy(agent: RecurrentActorCritic, path: Path, config: dict, protocol: ObservationProtocol) -> None:
    """Write a policy file: weights, feature names, action heads, `protocol`, `config` (plain data)."""
    atomic_save({
        "format": POLICY_FORMAT, "version": POLICY_VERSION, "state_dict": agent.state_dict(),
        "feature_names": list(FEATURE_NAMES), "action_heads": {k: list(v) for k, v in HEADS.items()},
        "hidden": agent.hidden, "obs_clip": agent.obs_clip, "privileged_critic": bool(agent.privileged_dim),
        "protocol": protocol.as_dict(), "config": config,
    }, path)


def policy_protocol(meta: dict) -> ObservationProtocol:
    """The observation protocol a policy file fixes (files without one: read off its config)."""
    if meta.get("protocol") is None:
        config = meta.get("config")
        return ObservationProtocol.from_training_config(config if isinstance(config, dict) else {})
    return ObservationProtocol.from_dict(meta["protocol"])


def _load(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise PolicyFileError(f"{path}: a folder, not a policy file (a run folder holds policy.pt and best.pt)")
    if not path.exists():
        raise PolicyFileError(f"{path}: no such policy file")
    reason = not_a_regular_file(path)
    if reason is not None:  # a device or a FIFO is never opened
        raise PolicyFileError(reason.replace("not a file", "not a policy file"))
    try:
        blob = load_verified(path)
    except DamagedFile as err:
        raise PolicyFileError(f"not a readable lhopt policy file: {err}") from None
    if not isinstance(blob, dict) or blob.get("format") != POLICY_FORMAT:
        raise PolicyFileError(f"{path}: not an lhopt policy file (expected format '{POLICY_FORMAT}')")
    if blob.get("version") != POLICY_VERSION:
        raise PolicyFileError(f"{path}: policy format version {blob.get('version')}, expected {POLICY_VERSION}")
    return blob


def load_policy(path: Path) -> tuple[RecurrentActorCritic, dict]:
    """The agent and the file's metadata; refuses (PolicyFileError, one line) files trained on
    other features or actions, files whose fields or weights are not a policy's, and weights
    that are not finite."""
    blob = _load(path)
    try:
        return _agent(path, blob)
    except PolicyFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise PolicyFileError(f"{path}: not a valid lhopt policy file ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:100] if str(err) else 'malformed'})") from None


def _agent(path: Path, blob: dict) -> tuple[RecurrentActorCritic, dict]:
    if not isinstance(blob.get("config", {}), (dict, type(None))):
        raise PolicyFileError(f"{path}: not a valid lhopt policy file (its config is not a mapping)")
    if list(blob["feature_names"]) != list(FEATURE_NAMES):
        raise PolicyFileError(f"{path}: trained on a different feature set than this lhopt version computes")
    if {k: list(v) for k, v in blob["action_heads"].items()} != {k: list(v) for k, v in HEADS.items()}:
        raise PolicyFileError(f"{path}: trained with different action heads than this lhopt version has")
    try:
        policy_protocol(blob)
    except ProtocolError as err:
        raise PolicyFileError(f"{path}: {err}") from None
    hidden, obs_clip = blob["hidden"], blob["obs_clip"]
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise PolicyFileError(f"{path}: its hidden size {hidden!r} is not a positive integer; not a usable policy")
    if isinstance(obs_clip, bool) or not isinstance(obs_clip, (int, float)) or not 0 < float(obs_clip) < float("inf"):
        raise PolicyFileError(f"{path}: its obs_clip {obs_clip!r} is not a positive, finite number; not a usable policy")
    stored = blob["state_dict"].get("encoder.0.weight")
    if not torch.is_tensor(stored) or stored.dim() != 2 or stored.shape[0] != hidden:
        # checked before the network is built: its size grows as hidden squared
        raise PolicyFileError(f"{path}: its hidden size {hidden} is not its weights' "
                              f"({tuple(stored.shape) if torch.is_tensor(stored) else 'none'}); not a usable policy")
    agent = lhopt_agent(int(blob["hidden"]), float(blob["obs_clip"]),
                        privileged_critic=bool(blob.get("privileged_critic", False)))
    bad = next((name for name, tensor in blob["state_dict"].items()
                if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()), None)
    if bad is not None:  # whole and CRC-checked, but no policy: it would drive every hyperparameter to a bound
        raise PolicyFileError(f"{path}: its weights are not finite ({bad} holds NaN or inf); not a usable policy")
    agent.load_state_dict(blob["state_dict"])
    agent.eval()
    return agent, blob
