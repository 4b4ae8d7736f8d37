"""Structured schemas: every composed config is merged into these to check keys and types."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional
from omegaconf import MISSING


@dataclass
class TaskBase:
    name: str = "?"
    batch_size: int = 32
    max_steps: Optional[int] = None  # cap on steps per run (None = one full epoch)
    eval_points: int = 25  # evenly spaced validation evaluations, the last at the end
    valid_size: Optional[int] = None  # validation examples used (None = all)


@dataclass
class MlpMnistTask(TaskBase):
    hidden: list[int] = field(default_factory=lambda: [128])
    activation: str = "relu"  # relu | tanh | gelu | silu
    norm: str = "none"  # none | layernorm


@dataclass
class MlpDigitsTask(MlpMnistTask):
    pass


@dataclass
class CnnMnistTask(TaskBase):
    channels: list[int] = field(default_factory=lambda: [16, 32])


@dataclass
class Mnist1dConvTask(TaskBase):
    channels: list[int] = field(default_factory=lambda: [32, 32])
    num_train: int = 32000
    num_valid: int = 2000


@dataclass
class CharLmTask(TaskBase):
    text_path: Optional[str] = None
    max_chars: int = 400000
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 4
    context: int = 64


@dataclass
class CharLmFinetuneTask(CharLmTask):
    pretrain_steps: int = 1000  # AdamW steps on Python source before the run (tasks/pretrain.py)


@dataclass
class NqmTask(TaskBase):
    dim: int = 1000
    condition: float = 1000.0
    noise: float = 1.0
    steps: int = 1000


@dataclass
class AlgorithmicTask(TaskBase):
    problem: str = "xor"
    cell: str = "gru"
    hidden: int = 32
    length: int = 12
    num_train: int = 4000
    num_valid: int = 500


@dataclass
class MarkovLmTask(TaskBase):
    vocab: int = 32
    concentration: float = 0.1
    data_seed: int = 0
    context: int = 32
    num_train: int = 4000
    num_valid: int = 400
    n_layer: int = 1
    d_model: int = 32
    n_head: int = 2


@dataclass
class SequenceClassificationTask(TaskBase):
    vocab: int = 16
    classes: int = 4
    concentration: float = 0.3
    data_seed: int = 0
    length: int = 24
    num_train: int = 4000
    num_valid: int = 500
    cell: str = "gru"
    d_model: int = 16
    hidden: int = 32


@dataclass
class CodeLmTask(TaskBase):
    max_chars: int = 100000
    d_model: int = 32
    hidden: int = 64
    context: int = 32
    text_path: Optional[str] = None  # unused: the corpus is the standard library's source


@dataclass
class MlpTabularTask(TaskBase):
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "relu"
    norm: str = "none"


@dataclass
class Co2ForecastTask(TaskBase):
    window: int = 26
    horizon: int = 4
    hidden: int = 16


@dataclass
class PatchAutoencoderTask(TaskBase):
    patch: int = 8
    patches_per_image: int = 2000
    hidden: list[int] = field(default_factory=lambda: [64])
    code: int = 16
    activation: str = "gelu"


@dataclass
class ResnetMnistTask(TaskBase):
    width: int = 8
    blocks: int = 1


@dataclass
class DigitsTransformerTask(TaskBase):
    d_model: int = 32
    n_head: int = 4
    n_layer: int = 2


@dataclass
class FriedmanRegressionTask(MlpTabularTask):
    num_train: int = 4000
    num_valid: int = 1000
    features: int = 10
    noise: float = 0.5
    data_seed: int = 0


@dataclass
class LorenzForecastTask(TaskBase):
    points: int = 4000
    every: int = 4
    window: int = 16
    horizon: int = 4
    data_seed: int = 0
    hidden: list[int] = field(default_factory=lambda: [64])
    activation: str = "tanh"


@dataclass
class Mnist1dTransformerTask(TaskBase):
    num_train: int = 4000
    num_valid: int = 1000
    d_model: int = 32
    n_head: int = 2
    n_layer: int = 1


@dataclass
class Mnist1dLstmTask(TaskBase):
    num_train: int = 16000
    num_valid: int = 1000
    hidden: int = 32


@dataclass
class MnistAutoencoderTask(TaskBase):
    hidden: list[int] = field(default_factory=lambda: [128])
    code: int = 16
    activation: str = "relu"


@dataclass
class SyntheticTabularTask(MlpTabularTask):
    num_train: int = 4000
    num_valid: int = 1000
    features: int = 20
    informative: int = 8
    classes: int = 4
    flip: float = 0.05
    data_seed: int = 0


TASK_SCHEMAS: dict[str, type] = {
    "algorithmic": AlgorithmicTask,
    "mlp_mnist": MlpMnistTask,
    "mlp_digits": MlpDigitsTask,
    "cnn_mnist": CnnMnistTask,
    "mnist1d_conv": Mnist1dConvTask,
    "char_lm": CharLmTask,
    "nqm": NqmTask,
    "markov_lm": MarkovLmTask,
    "sequence_classification": SequenceClassificationTask,
    "code_lm": CodeLmTask,
    "fair_tabular": MlpTabularTask,
    "randhie_regression": MlpTabularTask,
    "co2_forecast": Co2ForecastTask,
    "patch_autoencoder": PatchAutoencoderTask,
    "resnet_mnist": ResnetMnistTask,
    "digits_transformer": DigitsTransformerTask,
    "mnist_autoencoder": MnistAutoencoderTask,
    "synthetic_tabular": SyntheticTabularTask,
    "friedman_regression": FriedmanRegressionTask,
    "lorenz_forecast": LorenzForecastTask,
    "mnist1d_transformer": Mnist1dTransformerTask,
    "mnist1d_lstm": Mnist1dLstmTask,
    "char_lm_finetune": CharLmFinetuneTask,
}


@dataclass
class GridConfig:
    lrs: list[float] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)
    extended_lrs: list[float] = field(default_factory=list)  # run at extended_schedules only
    extended_schedules: Optional[list[str]] = None  # None: every schedule of `schedules`
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    clip_fraction: float = 1.0


@dataclass
class ExecutorConfig:
    name: str = "local"  # local | ray (train-policy's rollout workers as Ray actors)
    workers: int = 0  # 0 = one per CPU core; 1 = in the calling process
    path: str = "auto"  # auto | single | batched
    members: int = 32  # most runs batched in one process
    address: Optional[str] = None  # ray: None starts a local instance, "auto" joins a running cluster
    num_cpus: Optional[int] = None  # ray: CPUs of a started local instance (None: all)
    max_restarts: int = 3  # ray: restarts of a killed actor, retries of its rollout


@dataclass
class DebugConfig:
    max_steps: Optional[int] = None
    eval_points: Optional[int] = None
    valid_size: Optional[int] = None
    iterations: Optional[int] = None
    envs: Optional[int] = None
    decisions: Optional[list[int]] = None
    validation_every: Optional[int] = None
    validation_suite: Optional[str] = None
    pretrain_steps: Optional[int] = None


@dataclass
class ValidationConfig:
    every: int = 25
    suite: str = "validation"
    seeds: list[int] = field(default_factory=lambda: [0])
    guard: bool = True
    keep: bool = False


@dataclass
class BaselineGridConfig:
    command: str = "baseline-grid"
    debug: Optional[DebugConfig] = None
    task: Any = None  # checked against TASK_SCHEMAS[task.name]
    grid: GridConfig = field(default_factory=GridConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    seeds: list[int] = field(default_factory=lambda: [0])
    run_dir: Optional[str] = None
    chunk: int = 0
    chunks: int = 1


@dataclass
class ControllerConfig:
    hidden: int = 64
    obs_clip: float = 2.0
    decisions: list[int] = field(default_factory=lambda: [16, 128])
    eval_decisions: int = 64
    stats_every: int = 4
    eval_points: int = 25
    parameter_count: str = "all"
    min_interval: int = 1
    lr_decay: str = "constant"
    guard: bool = False
    privileged_critic: bool = False
    noop_logit: float = 0.0
    restart_none_logit: float = 0.0


@dataclass
class PPOSchema:
    learning_rate: float = 2e-4
    iterations: int = 300
    gamma: float = 1.0
    gae_lambda: float = 0.95
    minibatch_size: int = 128
    minibatch_episodes: int = 2
    update_epochs: int = 4
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 5.0
    target_kl: Optional[float] = None
    norm_adv: bool = True
    center_returns: bool = True
    clip_vloss: bool = True
    advantage: str = "gae"
    entropy_reduction: str = "sum"
    polyak: Optional[float] = None
    anchor_coef: float = 0.0
    imitation_coef: float = 0.0


@dataclass
class RewardConfig:
    reference: str = "defaults"
    sweep_lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3, 1e-2, 3e-2])
    sweep_schedules: list[str] = field(default_factory=lambda: ["constant", "cosine"])


@dataclass
class TrainPolicyConfig:
    command: str = "train-policy"
    experiment: Optional[Any] = None
    debug: Optional[DebugConfig] = None
    task_family: Any = None  # checked by TaskFamily when built
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    ppo: PPOSchema = field(default_factory=PPOSchema)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    run_dir: Optional[str] = None
    seed: int = 0
    envs: int = 16
    workers: int = 1
    reward_extrapolation: float = 2.0
    reward: RewardConfig = field(default_factory=RewardConfig)
    resume: bool = False
    init_policy: Optional[str] = None
    checkpoint_every: int = 5
    tensorboard: bool = False  # also log each iteration's numbers to run_dir/tensorboard/ (pip install tensorboard)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


@dataclass
class ColumnsConfig:
    params: Optional[str] = "params"
    tokens: Optional[str] = "tokens"
    flops: Optional[str] = None
    loss: Optional[str] = "loss"
    method: Optional[str] = "method"
    step: Optional[str] = "step"


@dataclass
class TargetConfig:
    flops: Optional[float] = None
    params: Optional[float] = None


@dataclass
class ScalingFitConfig:
    command: str = "scaling-fit"
    experiment: Optional[Any] = None
    debug: Optional[DebugConfig] = None
    inputs: list[str] = field(default_factory=list)
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    baseline: str = "baseline"
    method: str = "lhopt"
    target: TargetConfig = field(default_factory=TargetConfig)
    bootstrap: int = 200
    parametric: bool = True
    run_dir: Optional[str] = None


@dataclass
class PendingCommandConfig:
    """Commands whose options have not landed yet take only the shared keys."""

    command: str = "?"
    debug: Optional[DebugConfig] = None
    run_dir: Optional[str] = None


@dataclass
class SuiteMember:
    id: str = "?"
    task: str = "?"  # a conf/task/ name
    params: dict[str, Any] = field(default_factory=dict)  # task.KEY=VALUE overrides


@dataclass
class FixedSetting:
    """One AdamW setting of the grid, chosen without the suite it is reported on."""

    lr: float = MISSING  # both given: a partial override must not fall back to a default
    schedule: str = MISSING
    chosen_on: Optional[str] = None  # the suite whose stored grid chose it


@dataclass
class SuiteConfig:
    name: str = "?"
    family: Optional[str] = None  # the train suite: a task family, not a list
    members: list[SuiteMember] = field(default_factory=list)
    extended_lrs: Optional[list[float]] = MISSING  # the extended lrs its stored grid holds (unset: evaluate's)
    extended_schedules: Optional[list[str]] = MISSING  # their schedules (None: every schedule; unset: evaluate's)
    fixed_default: Optional[FixedSetting] = None  # recorded by scripts/suites/choose_fixed_default.py


@dataclass
class ProtocolSettings:
    """Checked against the policy file's observation protocol; None: the file's value."""

    decisions: Optional[int] = None
    stats_every: Optional[int] = None
    eval_points: Optional[int] = None
    parameter_count: Optional[str] = None
    min_interval: Optional[int] = None
    lr_decay: Optional[str] = None


@dataclass
class EvaluateConfig:
    command: str = "evaluate"
    debug: Optional[DebugConfig] = None
    grid: GridConfig = field(default_factory=GridConfig)
    protocol: ProtocolSettings = field(default_factory=ProtocolSettings)
    suite: Optional[SuiteConfig] = None
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    policy: str = "default"
    tasks: Optional[list[str]] = None
    task_overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    grid_dir: Optional[str] = None
    extra_baselines: list[str] = field(default_factory=list)
    replay: Optional[str] = None  # a schedule file, replayed on every task and seed as method "replay"
    extended_lrs: list[float] = field(default_factory=list)
    extended_schedules: Optional[list[str]] = None  # None: every schedule of the grid
    fixed_default: Optional[FixedSetting] = None  # None: the suite's record, else the test suite's
    greedy: bool = True
    guard: bool = True
    run_dir: Optional[str] = None


COMMAND_SCHEMAS: dict[str, type] = {
    "baseline-grid": BaselineGridConfig,
    "train-policy": TrainPolicyConfig,
    "evaluate": EvaluateConfig,
    "scaling-fit": ScalingFitConfig,
}
