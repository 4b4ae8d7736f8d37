"""The train-policy job: PPO meta-training of the controller over a task family.

Writes <run_dir>/meta_train.csv (one row per PPO iteration), <run_dir>/checkpoint.pt (every
`checkpoint_every` iterations, atomically), <run_dir>/best.pt (the best policy on the validation
suite so far, validation.py) and <run_dir>/policy.pt at the end. `resume=true` continues from
checkpoint.pt; iterations end on episode boundaries, so a resumed run takes the same path as an
uninterrupted one with the same seed.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from lhopt_cli.config.compose import ConfigError
from lhopt_cli.control.actions import prior_logits
from lhopt_cli.control.checkpoint import DamagedFile, PolicyFileError, atomic_save, load_policy, load_verified, policy_protocol, save_policy
from lhopt_cli.control.policy import RecurrentActorCritic, lhopt_agent
from lhopt_cli.control.ppo import PPO, PPOConfig
from lhopt_cli.control.protocol import ObservationProtocol, ProtocolError
from lhopt_cli.control.reference import ReferenceSweep
from lhopt_cli.control.workers import LocalWorkers, RayWorkers, initial_worker_state
from lhopt_cli.support.files import atomic_write, header_only, open_append
from lhopt_cli.support.executor import resolve_workers
from lhopt_cli.support.progress import progress_bar
from lhopt_cli.tasks import HELDOUT_KINDS
from lhopt_cli.tasks.families import FamilyError, TaskFamily, check_family_shape
from lhopt_cli.commands.validation import ValidationSuite, check_validation_settings
from lhopt_cli.config.schemas import ControllerConfig, ExecutorConfig, RewardConfig, ValidationConfig
from lhopt_cli.support.threads import on_run_threads

LOG_COLUMNS = ["iteration", "global_step", "episodes", "mean_episode_reward", "episodes_per_s", "approx_kl",
               "clipfrac", "entropy", "explained_variance", "pg_loss", "v_loss", "rollout_s", "update_s", "validation_speedup", "validation_s",
               "reference_s", "update_epochs", "validation_speedup_polyak", "anchor_kl", "imitation_loss", "label_agreement"]


@dataclass(frozen=True)
class TrainPolicyPlan:
    """Everything `lhopt train-policy` runs from, checked in one pre-flight (`plan`) before
    anything is written: the run folder, the composed config as plain data (recorded in every
    policy file), the trained policy's observation protocol, the controller, PPO and validation
    settings, the task family (its tasks validated at the protocol's points), the episodes'
    VecLhoptEnv arguments and the network's, the seed, the rollout workers and their executor,
    the policy a fresh run starts from (init_policy: the network and the lr decay it ran under),
    the checkpoint a resume continues (read once) with the record of best.pt, the job's debug
    values, and the TensorBoard and checkpoint cadence settings."""

    run_dir: Path
    config: dict
    protocol: ObservationProtocol
    controller: ControllerConfig
    ppo: PPOConfig
    validation: ValidationConfig
    family: dict
    env_kwargs: dict
    agent_kwargs: dict
    seed: int
    workers: int
    executor: ExecutorConfig
    initial: tuple[RecurrentActorCritic, str] | None
    resume_state: dict | None
    best: dict
    debug: dict | None
    tensorboard: bool
    checkpoint_every: int

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoint.pt"


def plan(cfg: DictConfig, run_dir: Path) -> TrainPolicyPlan:
    """The command's pre-flight. ConfigError (one line) for a task family, PPO, reward, run or
    validation setting no run can use, `init_policy` that cannot start this run, a `run_dir` that
    holds a meta-training run without `resume`, a resume that would be refused (a damaged
    checkpoint or log, another protocol or worker count, another validation suite), or
    tensorboard=true without the tensorboard package: checked before anything is written, so a
    refused command changes nothing."""
    run_dir = Path(run_dir)
    controller = OmegaConf.to_object(cfg.controller)
    protocol = training_protocol(controller)
    family = family_config(OmegaConf.to_container(cfg.task_family, resolve=True), protocol)
    ppo = ppo_config(OmegaConf.to_container(cfg.ppo, resolve=True))
    sweep = reference_sweep(OmegaConf.to_object(cfg.reward) if cfg.get("reward") is not None else None)
    validation = OmegaConf.to_object(cfg.validation)
    debug = None if cfg.get("debug") is None else OmegaConf.to_container(cfg.debug, resolve=True)
    extrapolation = float(cfg.reward_extrapolation)
    check_run_settings(int(cfg.envs), int(cfg.workers), int(cfg.checkpoint_every), extrapolation, validation, debug)
    env_kwargs = episode_env_kwargs(controller, protocol, family, sweep, ppo.imitation_coef, int(cfg.envs), extrapolation)
    tensorboard = bool(cfg.get("tensorboard", False))
    if tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401  (the writer itself comes once the folder is held)
        except ImportError:
            raise ConfigError('tensorboard=true needs the tensorboard package: pip install "lhopt-cli[tensorboard]"'
                              ) from None
    checkpoint, resume = run_dir / "checkpoint.pt", bool(cfg.resume)
    initial = None
    if cfg.get("init_policy") and not (resume and checkpoint.exists()):
        # a resumed run continues from its checkpoint, whatever became of that file
        initial = initial_policy(Path(str(cfg.init_policy)), controller, protocol)
    if not resume and (_holds_iterations(run_dir / "meta_train.csv") or checkpoint.exists()):
        raise ConfigError(f"{run_dir} already holds a meta-training run: pass resume=true or another run_dir")
    state = None
    if resume and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        workers = len(state["ppo"]["worker_states"])
        if workers != int(cfg.workers):
            raise ConfigError(f"{checkpoint} was written with {workers} rollout workers; resume it with workers={workers}")
        check_resumed_protocol(protocol, controller, state, checkpoint)
        _log_rows(run_dir / "meta_train.csv", int(state["ppo"]["iteration"]))
    best = resumed_best(state, checkpoint, validation.suite, list(validation.seeds))
    agent_kwargs = {"hidden": int(controller.hidden), "obs_clip": float(controller.obs_clip),
                    "privileged_critic": bool(controller.privileged_critic)}
    return TrainPolicyPlan(run_dir=run_dir, config=OmegaConf.to_container(cfg, resolve=True), protocol=protocol,
                           controller=controller, ppo=ppo, validation=validation, family=family, env_kwargs=env_kwargs,
                           agent_kwargs=agent_kwargs, seed=int(cfg.seed), workers=int(cfg.workers),
                           executor=OmegaConf.to_object(cfg.executor), initial=initial, resume_state=state, best=best,
                           debug=debug, tensorboard=tensorboard, checkpoint_every=int(cfg.checkpoint_every))


def _holds_iterations(log: Path) -> bool:
    """Whether a meta-training log records an iteration (a log with its header alone is what a
    run that failed before its first iteration leaves: no run to protect)."""
    return log.exists() and not header_only(log)  # a link to a file, or a folder: refused as a run


def make_workers(count: int, executor: ExecutorConfig, family: dict, env_kwargs: dict, agent_kwargs: dict):
    """`count` rollout workers on the chosen executor: local (this process or local processes) or Ray."""
    if count < 1:
        raise ConfigError(f"workers must be >= 1 (got {count})")
    if executor.name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("executor=ray needs Ray: pip install 'lhopt-cli[ray]'") from None
        return RayWorkers(count, family, env_kwargs, agent_kwargs, address=executor.address,
                          num_cpus=executor.num_cpus, max_restarts=int(executor.max_restarts))
    return LocalWorkers(count, resolve_workers(int(executor.workers), count), family, env_kwargs, agent_kwargs)


def training_protocol(controller) -> ObservationProtocol:
    """The observation protocol the trained policy's file will carry, from the controller
    settings (conf/controller/; ControllerConfig, or a recorded config's `controller` section:
    files from before lr_decay existed ran under `constant`)."""
    c = controller
    try:
        return ObservationProtocol(decisions=int(c.eval_decisions), stats_every=int(c.stats_every),
                                   eval_points=int(c.eval_points), parameter_count=str(c.parameter_count),
                                   min_interval=int(c.min_interval), lr_decay=str(getattr(c, "lr_decay", None) or "constant"))
    except ProtocolError as err:
        raise ConfigError(f"controller: {str(err).removeprefix('observation protocol: ')}") from None


def family_config(family_cfg: dict, protocol: ObservationProtocol) -> dict:
    """The task family (task_family as plain data), its tasks validated as the protocol says (a
    contradicting family refused, ConfigError), with the protocol's eval_points."""
    try:
        # validations come from the protocol alone: where the family or one kind sets them, they must agree
        check_family_shape(family_cfg)  # kinds a mapping of mappings, before reading them
        specs = {"task_family": family_cfg, **{f"task_family.kinds.{k}": v for k, v in family_cfg["kinds"].items()}}
        for where, spec in specs.items():
            if isinstance(spec, dict) and "eval_points" in spec:
                if spec["eval_points"] is None:
                    raise ProtocolError(f"{where}: eval_points=null; leave it unset (controller.eval_points sets it)")
                protocol.check(where, eval_points=spec["eval_points"])
        held_out = sorted(set(TaskFamily(family_cfg).names) & set(HELDOUT_KINDS))
        if held_out:
            raise FamilyError(f"task_family draws {', '.join(held_out)}: held-out kinds (the leave-kinds-out "
                              "validation suite) are never trained on; exclude them")
    except (FamilyError, ProtocolError) as err:
        raise ConfigError(str(err)) from None
    return {**family_cfg, "eval_points": protocol.eval_points}


def episode_env_kwargs(controller: ControllerConfig, protocol: ObservationProtocol, family: dict,
                       sweep: ReferenceSweep | None, imitation_coef: float, envs: int, extrapolation: float) -> dict:
    """VecLhoptEnv's arguments for meta-training episodes; ConfigError (one line) for a
    start_around_best or lr labels without the sweep they read the best lr from."""
    c = controller
    around = family.get("start_around_best") or 0.0
    if isinstance(around, bool) or not isinstance(around, (int, float)) or not (around == 0 or 1 < around < math.inf):
        raise ConfigError(f"task_family.start_around_best must be 0 (off) or a spread above 1 (got {around!r})")
    if around and sweep is None:
        raise ConfigError("task_family.start_around_best needs reward.reference=sweep: the best lr comes from the sweep")
    imitation = float(imitation_coef or 0.0)
    if imitation > 0 and sweep is None:
        raise ConfigError("ppo.imitation_coef needs reward.reference=sweep: the lr labels point at the sweep's best lr")
    return {"num_envs": envs, "decisions": (int(c.decisions[0]), int(c.decisions[1])),
            "protocol": protocol.as_dict(), "reuse": int(family.get("reuse", 2)),
            "randomize_start": "start_lr_scale" not in family,
            "start_lr_scale": float(family.get("start_lr_scale", 1.0)),
            "reward_extrapolation": extrapolation, "reference_sweep": sweep,
            "eval_start_share": float(family.get("eval_start_share", 0.0)),
            "guard": bool(c.guard), "start_around_best": float(around), "label_lr": imitation > 0}


def reference_sweep(reward: RewardConfig | None) -> ReferenceSweep | None:
    """The tuned reference the reward is measured against (reward.reference=sweep), or None for
    AdamW at its defaults (reward.reference=defaults, or no reward settings). Raises ConfigError
    on bad settings."""
    if reward is None or reward.reference == "defaults":
        return None
    if reward.reference != "sweep":
        raise ConfigError(f"reward.reference must be defaults or sweep (got {reward.reference!r})")
    try:
        return ReferenceSweep(tuple(float(lr) for lr in reward.sweep_lrs), tuple(str(s) for s in reward.sweep_schedules))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def build(plan: TrainPolicyPlan, fresh: bool = True) -> PPO:
    """PPO with its agent and rollout workers; a `fresh` run starts from the plan's init_policy
    where one is set (a resumed run starts from its checkpoint, loaded afterwards)."""
    c = plan.controller
    torch.manual_seed(plan.seed)
    agent = lhopt_agent(**plan.agent_kwargs, prior_logits=prior_logits(float(c.noop_logit), float(c.restart_none_logit)))
    if fresh and plan.initial is not None:  # before PPO, so its Polyak average starts here too
        agent.load_state_dict(plan.initial[0].state_dict())
    states = [initial_worker_state(plan.seed, i, plan.family, plan.env_kwargs) for i in range(plan.workers)]
    workers = make_workers(plan.workers, plan.executor, plan.family, plan.env_kwargs, plan.agent_kwargs)
    return PPO(None, agent, plan.ppo, seed=plan.seed, workers=workers, worker_states=states)


def initial_policy(path: Path, controller: ControllerConfig, protocol: ObservationProtocol) -> tuple[RecurrentActorCritic, str]:
    """The policy a fresh run starts from (`init_policy`: a policy file, e.g. another run's
    best.pt): its weights, input normaliser and critic replace the untrained network's, so
    meta-training continues it on this run's family and reward (and lr decay, which may differ).
    Returns the agent and the lr decay the file ran under. ConfigError (one line) for an
    unreadable file or one of another network width, observation protocol or critic."""
    try:
        agent, meta = load_policy(path)
    except PolicyFileError as err:
        raise ConfigError(f"init_policy: {err}") from None
    c = controller
    ours = {"controller.hidden": int(c.hidden), "controller.obs_clip": float(c.obs_clip),
            "controller.privileged_critic": bool(c.privileged_critic)}
    theirs = {"controller.hidden": agent.hidden, "controller.obs_clip": agent.obs_clip,
              "controller.privileged_critic": bool(agent.privileged_dim)}
    # the lr decay may change: the continued policy learns to set its scale under the new one
    theirs_protocol = replace(policy_protocol(meta), lr_decay=protocol.lr_decay)
    if theirs_protocol != protocol:
        raise ConfigError(f"init_policy {path} was trained under another observation protocol; start it with "
                          f"{protocol_overrides(theirs_protocol, protocol)}")
    differ = [f"{k}={v}" for k, v in theirs.items() if ours[k] != v]
    if differ:
        raise ConfigError(f"init_policy {path} is another network; start it with {' '.join(differ)}")
    return agent, policy_protocol(meta).lr_decay


def ppo_config(settings: dict) -> PPOConfig:
    """PPO's settings (conf/ppo/, as plain data); ConfigError on a bad value."""
    try:
        return PPOConfig(**settings)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _log_rows(path: Path, keep_through: int) -> list[dict]:
    """The log's rows up to the checkpoint's iteration; ConfigError (one line) for a log that is
    not meta_train.csv (garbled, no iteration column)."""
    if not path.exists():
        return []
    fix = "restore it or remove it to resume from the checkpoint alone"
    try:
        with path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["iteration"]) <= keep_through]
    except (KeyError, TypeError, ValueError, csv.Error, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not a readable meta-training log ({type(err).__name__}); {fix}") from None
    for row in rows:  # a row torn mid-write has too few fields (None) or too many (key None)
        if None in row or any(value is None for value in row.values()):
            raise ConfigError(f"{path}: the row of iteration {row['iteration']} is torn (a write cut short); {fix}")
    iterations = [int(row["iteration"]) for row in rows]
    if iterations != list(range(1, keep_through + 1)):  # an emptied log (its header alone) too
        missing = sorted(set(range(1, keep_through + 1)) - set(iterations))
        shown = f"iteration {missing[0]}" if missing else "iterations out of order"
        raise ConfigError(f"{path}: rows are missing up to the checkpoint's iteration {keep_through} ({shown}); {fix}")
    return rows


def load_checkpoint(path: Path) -> dict:
    """A meta-training checkpoint, verified (control/checkpoint.load_verified). ConfigError (one
    line naming the file) for a damaged file or one that is not a train-policy checkpoint (a
    policy file, a foreign pickle)."""
    try:
        state = load_verified(path)
    except DamagedFile as err:
        raise ConfigError(f"{err}; resume from an intact checkpoint or start a new run_dir") from None
    if not isinstance(state, dict) or not isinstance(state.get("ppo"), dict):
        kind = "a policy file" if isinstance(state, dict) and state.get("format") == "lhopt-policy" else "something else"
        raise ConfigError(f"{path}: not a train-policy checkpoint ({kind})")
    ppo = state["ppo"]
    missing = [k for k in ("agent", "iteration", "worker_states") if k not in ppo]
    if missing or not isinstance(ppo.get("worker_states"), list) or not isinstance(ppo.get("iteration"), int):
        raise ConfigError(f"{path}: not a complete train-policy checkpoint (its ppo state lacks "
                          f"{', '.join(missing) or 'a valid iteration or worker list'})")
    return state


def check_run_settings(envs: int, workers: int, checkpoint_every: int, extrapolation: float,
                       validation: ValidationConfig, debug: dict | None) -> None:
    """ConfigError (one line) for run-level values no run can use: envs, workers or
    checkpoint_every below 1, a reward_extrapolation that is not a finite number > 1, validation
    settings that are refused (the test suite, no seeds), or a validation suite that does not
    exist (with validation passes on or off)."""
    for name, value in (("envs", envs), ("workers", workers), ("checkpoint_every", checkpoint_every)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1 (got {value})")
    if not 1 < extrapolation < math.inf:
        raise ConfigError(f"reward_extrapolation must be a finite number > 1 (got {extrapolation})")
    check_validation_settings(validation)
    # composed whether or not passes will run: a suite that does not exist is refused either way
    ValidationSuite.suite_config(validation.suite, list(validation.seeds), debug)


@on_run_threads  # the whole command on the runs' thread count: PPO's updates too (docs/method.md)
def run(plan: TrainPolicyPlan, console: Console | None = None) -> Path:
    """Meta-train from the plan (a fresh run, or its resume) into plan.run_dir; returns policy.pt's path."""
    console = console or Console(soft_wrap=True)
    run_dir = plan.run_dir
    log_path = run_dir / "meta_train.csv"
    if plan.initial is not None and plan.initial[1] != plan.protocol.lr_decay:
        console.print(f"init_policy ran under lr_decay={plan.initial[1]}; this run trains it under "
                      f"lr_decay={plan.protocol.lr_decay} (controller.lr_decay)")
    state, best = plan.resume_state, dict(plan.best)
    done = None if state is None else int(state["ppo"]["iteration"])
    if done is not None and done >= plan.ppo.iterations and (run_dir / "policy.pt").exists():
        # nothing to train: say so before any validation suite is built or any file rewritten
        console.print(f"{run_dir}: complete, {done} PPO iterations done (ppo.iterations={plan.ppo.iterations}); "
                      f"raise ppo.iterations to train further")
        return run_dir / "policy.pt"
    validation = None
    if plan.validation.every:
        start = time.perf_counter()
        validation = ValidationSuite(plan.validation.suite, list(plan.validation.seeds), plan.protocol,
                                     run_dir / "validation_grid", debug=plan.debug, console=console)
        console.print(f"validation suite {plan.validation.suite} ready in {time.perf_counter() - start:.1f} s")
    ppo = build(plan, fresh=state is None)
    try:
        _train(plan, ppo, state, log_path, console, validation, best)
    finally:
        ppo.workers.close()
    policy_path = run_dir / "policy.pt"
    save_policy(ppo.agent, policy_path, plan.config, plan.protocol)
    from lhopt_cli.support.plots import meta_training_plot

    figure = meta_training_plot(pd.read_csv(log_path), run_dir.name, run_dir / "meta_training.png")
    console.print(f"figure: {figure}")
    return policy_path


def protocol_overrides(theirs: ObservationProtocol, ours: ObservationProtocol) -> str:
    """The controller overrides that turn `ours` into `theirs`, e.g. 'controller.min_interval=1'."""
    return " ".join(f"controller.{'eval_decisions' if k == 'decisions' else k}={v}"
                    for k, v in theirs.as_dict().items() if v != getattr(ours, k))


def check_resumed_protocol(ours: ObservationProtocol, controller: ControllerConfig, state: dict,
                           checkpoint: Path) -> None:
    """Refuse (ConfigError) to resume under another observation protocol than the checkpoint was
    trained with (checkpoints without one were trained under the legacy protocol of their
    controller settings)."""
    try:
        if state.get("protocol") is not None:
            theirs = ObservationProtocol.from_dict(state["protocol"])
        else:
            theirs = ObservationProtocol.from_training_config(
                {"controller": {"eval_decisions": int(controller.eval_decisions),
                                "stats_every": int(controller.stats_every)}})
    except ProtocolError as err:
        raise ConfigError(f"{checkpoint}: {err}") from None
    if theirs != ours:
        raise ConfigError(f"{checkpoint} was trained under another observation protocol; resume it with "
                          f"{protocol_overrides(theirs, ours)}")


def resumed_best(state: dict | None, checkpoint: Path, suite_name: str, seeds: list[int]) -> dict:
    """The record of the policy best.pt holds (iteration, validation_speedup, weights: raw or
    polyak) and what it was
    scored on (`suite_name`, `seeds`: this run's validation settings): read from the checkpoint a
    run resumes (`state`, loaded from `checkpoint`), else empty (state None). A resume that would
    score on another suite or seeds is refused (ConfigError): its scores would not be comparable."""
    best = {"iteration": None, "validation_speedup": -math.inf, "suite": suite_name, "seeds": seeds, "weights": None}
    if state is None:
        return best
    held = state.get("best")
    if held is None or held["iteration"] is None:
        return best
    if (held.get("suite"), list(held.get("seeds", []))) != (suite_name, seeds):
        raise ConfigError(f"{checkpoint}: best.pt was chosen on validation.suite={held.get('suite')} with "
                          f"validation.seeds={list(held.get('seeds', []))}; resume with those")
    return held


def _train(plan: TrainPolicyPlan, ppo: PPO, state: dict | None, log_path: Path, console: Console,
           validation: ValidationSuite | None, best: dict) -> None:
    """PPO from `state` (the checkpoint the plan resumes; None: a fresh run)."""
    run_dir, checkpoint = plan.run_dir, plan.checkpoint
    if state is not None:
        if "env" in state and state["ppo"].get("worker_states") is None:  # a one-env checkpoint of v0.1
            state["ppo"]["worker_states"] = [{**ppo.worker_states[0], "env": state["env"]}]
        if len(state["ppo"]["worker_states"]) != len(ppo.worker_states):
            raise ConfigError(f"{checkpoint} was written with {len(state['ppo']['worker_states'])} rollout "
                              f"workers; resume it with workers={len(state['ppo']['worker_states'])}")
        check_resumed_protocol(plan.protocol, plan.controller, state, checkpoint)
        try:
            ppo.load_state_dict(state["ppo"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:  # shapes or fields of another kind
            raise ConfigError(f"{checkpoint}: its ppo state does not fit this run ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:100]})") from None
        console.print(f"Resuming from iteration {ppo.iteration} of {ppo.cfg.iterations} ({checkpoint})")
        if ppo.anchor is not None and not (state["ppo"].get("initial_weights") or state["ppo"].get("anchor")):
            console.print("ppo.anchor_coef: this checkpoint predates the record of the run's initial weights; "
                          "the anchor is the weights resumed")
    rows = _log_rows(log_path, ppo.iteration)  # drop rows logged after the checkpoint

    def write_log(temporary: Path) -> None:
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, LOG_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(log_path, write_log)  # a link planted at its name is replaced, then appends refuse links
    board = None
    if plan.tensorboard:
        from lhopt_cli.support.tensorboard_log import log_scalars, summary_writer

        board = summary_writer(run_dir / "tensorboard", purge_step=ppo.iteration + 1)
        console.print(f"tensorboard: tensorboard --logdir {run_dir / 'tensorboard'}")
    with progress_bar(console) as bar, open_append(log_path) as handle:
        writer = csv.DictWriter(handle, LOG_COLUMNS, extrasaction="ignore")
        task = bar.add_task("meta-training", total=ppo.cfg.iterations, completed=ppo.iteration)

        def on_iteration(stats: dict) -> None:
            final, improved = ppo.iteration == ppo.cfg.iterations, False
            if validation is not None and (ppo.iteration % plan.validation.every == 0 or final):
                start = time.perf_counter()
                candidates = {"raw": ppo.agent}
                averaged = ppo.polyak_agent()
                if averaged is not None:  # the averaged weights compete with the raw ones
                    candidates["polyak"] = averaged
                guard = plan.validation.guard
                scores = {kind: validation.score(agent, guard=guard)[0] for kind, agent in candidates.items()}
                stats = {**stats, "validation_speedup": scores["raw"], "validation_s": time.perf_counter() - start,
                         "validation_speedup_polyak": scores.get("polyak")}
                kind = max(scores, key=lambda k: scores[k])
                score = scores[kind]
                if plan.validation.keep:  # every pass's policies, to score neighbouring passes again
                    (run_dir / "passes").mkdir(exist_ok=True)
                    for name, agent in candidates.items():
                        config = {**plan.config, "trained_iterations": ppo.iteration,
                                  "validation_speedup": scores[name], "weights": name}
                        save_policy(agent, run_dir / "passes" / f"iteration_{ppo.iteration:05d}_{name}.pt", config,
                                    plan.protocol)
                improved = score > best["validation_speedup"]
                if improved:
                    best.update(iteration=ppo.iteration, validation_speedup=score, weights=kind)
                    config = {**plan.config, "trained_iterations": ppo.iteration,
                              "validation_speedup": score, "weights": kind}
                    save_policy(candidates[kind], run_dir / "best.pt", config, plan.protocol)
                shown = ", ".join(f"{k} {v:.3f}x" for k, v in scores.items())
                console.print(f"iteration {ppo.iteration}: validation median speedup {shown} "
                              f"(best {best['validation_speedup']:.3f}x at iteration {best['iteration']})")
            writer.writerow(stats)
            handle.flush()
            if board is not None:
                log_scalars(board, "meta_train", {k: stats.get(k) for k in LOG_COLUMNS if k != "iteration"},
                            ppo.iteration)
                board.flush()
            reward = stats["mean_episode_reward"]
            bar.update(task, advance=1, description=f"meta-training (reward {reward:+.2f})"
                       if math.isfinite(reward) else "meta-training")
            # a new best.pt comes with a checkpoint, so a resumed run knows of it
            if ppo.iteration % plan.checkpoint_every == 0 or final or improved:
                atomic_save({"ppo": ppo.state_dict(), "protocol": plan.protocol.as_dict(), "best": best},
                            checkpoint)

        try:
            ppo.train(on_iteration)
        finally:
            if board is not None:
                board.close()
    if validation is not None:  # its cost, from the whole log (a resumed run's earlier rows too)
        rows = _log_rows(log_path, ppo.iteration)
        spent = sum(float(r["validation_s"] or 0) for r in rows)
        total = spent + sum(float(r["rollout_s"]) + float(r["update_s"]) for r in rows)
        console.print(f"validation passes: {spent:.1f} s of {total:.1f} s of training ({spent / max(total, 1e-9):.1%}); best.pt: "
                      f"{best['validation_speedup']:.3f}x at iteration {best['iteration']}")
