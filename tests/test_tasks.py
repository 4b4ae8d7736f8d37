"""Every task, composed from its real config and built: it trains, its costs and eval steps are sane."""
from __future__ import annotations

import math
import os

import pytest
import torch

from lhopt_cli.config.compose import compose
from lhopt_cli.inner import HParams, ScheduleHook, train_one_epoch
from lhopt_cli.tasks import TASKS, build_task

SMALL = ["task.max_steps=30", "task.eval_points=3", "task.valid_size=256"]
EXTRA = {
    "mnist1d_conv": ["task.num_train=3200", "task.num_valid=400"],
    "char_lm": ["task.max_chars=60000"],
    "mnist1d_transformer": ["task.num_train=3200", "task.num_valid=400"],
    "mnist1d_lstm": ["task.num_train=3200", "task.num_valid=400"],
    "char_lm_finetune": ["task.max_chars=60000", "task.pretrain_steps=20"],
}
LR = {"mlp_mnist": 3e-3, "mlp_digits": 1e-2, "algorithmic": 1e-2, "cnn_mnist": 3e-3, "mnist1d_conv": 1e-2, "char_lm": 3e-3, "nqm": 0.1,
      "code_lm": 1e-2, "fair_tabular": 3e-3, "randhie_regression": 1e-3, "co2_forecast": 1e-2, "patch_autoencoder": 3e-3,
      "resnet_mnist": 1e-2, "digits_transformer": 3e-3, "markov_lm": 1e-2, "sequence_classification": 1e-2,
      "mnist_autoencoder": 3e-3, "synthetic_tabular": 3e-3, "friedman_regression": 3e-3, "lorenz_forecast": 1e-2,
      "mnist1d_transformer": 3e-3, "mnist1d_lstm": 1e-2, "char_lm_finetune": 3e-3}
NAMES = list(TASKS)
USER_CACHE = os.environ.get("LHOPT_CACHE")  # before the fixtures point it at a temporary folder


def small_cfg(name: str, *more: str):
    return compose("baseline_grid", [f"task={name}", *SMALL, *EXTRA.get(name, []), *more])


def run(task, seed: int = 0):
    return train_one_epoch(task, seed, ScheduleHook("constant", HParams(lr=LR[task.name])))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Generated data of the small configs goes to a temporary cache, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("lhopt_cache")
        mp.setenv("LHOPT_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def small_tasks(cache_dir):
    return {name: build_task(small_cfg(name).task) for name in NAMES}


@pytest.fixture(scope="module")
def seed0_runs(small_tasks):
    return {}


def seed0_run(small_tasks, seed0_runs, name):
    if name not in seed0_runs:
        seed0_runs[name] = run(small_tasks[name], 0)
    return seed0_runs[name]


def test_all_tasks_covered():
    assert set(NAMES) == {"algorithmic", "mlp_mnist", "mlp_digits", "cnn_mnist", "mnist1d_conv", "char_lm", "nqm",
                          "code_lm", "fair_tabular", "randhie_regression", "co2_forecast", "patch_autoencoder",
                          "resnet_mnist", "digits_transformer", "markov_lm", "sequence_classification",
                          "mnist_autoencoder", "synthetic_tabular", "friedman_regression", "lorenz_forecast",
                          "mnist1d_transformer", "mnist1d_lstm", "char_lm_finetune"}


@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_validation_loss(small_tasks, seed0_runs, name):
    task = small_tasks[name]
    assert task.name == name and isinstance(task, TASKS[name])
    assert task.total_steps == 30
    result = seed0_run(small_tasks, seed0_runs, name)
    assert result.status == "done"
    assert result.steps == 30
    steps = [row["step"] for row in result.curve]
    assert steps == [0, *task.eval_steps()]
    losses = [row["valid_loss"] for row in result.curve]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    assert math.isnan(result.curve[0]["train_loss"])  # no training before step 0
    assert all(math.isfinite(row["train_loss"]) for row in result.curve[1:])
    assert all(row["lr"] == LR[name] for row in result.curve[1:])
    assert result.final_valid_loss == losses[-1]


@pytest.mark.parametrize("name", NAMES)
def test_costs_are_positive(small_tasks, name):
    task = small_tasks[name]
    model = task.make_model(0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert task.num_params > 0
    assert task.num_params == trainable - task.embedding_params(model)  # N leaves out lookup tables only
    if name not in ("char_lm", "char_lm_finetune", "code_lm", "markov_lm", "sequence_classification"):  # no token embeddings
        assert task.num_params == trainable
    assert task.flops_per_step > 0
    assert task.examples_per_step > 0


@pytest.mark.parametrize("name", NAMES)
def test_eval_steps_evenly_spaced_ending_at_total(small_tasks, name):
    task = small_tasks[name]
    steps = task.eval_steps()
    assert steps == [10, 20, 30]
    assert steps[-1] == task.total_steps


@pytest.mark.parametrize("points,total", [(3, 30), (7, 30), (25, 125), (25, 352), (25, 1000), (30, 30), (40, 30)])
def test_eval_steps_spacing(cache_dir, points, total):
    task = build_task(compose("baseline_grid", ["task=nqm", "task.dim=4", f"task.steps={total}", f"task.eval_points={points}"]).task)
    steps = task.eval_steps()
    assert steps[-1] == task.total_steps == total
    assert steps[0] >= 1
    assert len(steps) == min(points, total)
    gaps = [b - a for a, b in zip([0, *steps], steps)]
    assert min(gaps) >= 1
    assert max(gaps) - min(gaps) <= 1  # evenly spaced up to rounding
    exact = total / min(points, total)
    assert all(abs(s - (k + 1) * exact) <= 0.5 + 1e-9 for k, s in enumerate(steps))


@pytest.mark.parametrize("name", NAMES)
def test_seed_fixes_curve_and_init(small_tasks, seed0_runs, name):
    task = small_tasks[name]
    first = seed0_run(small_tasks, seed0_runs, name)
    again = run(task, 0)
    key = ("step", "train_loss", "valid_loss")
    assert [[row[k] for k in key] for row in again.curve] == [[row[k] for k in key] for row in first.curve]

    a, b, c = task.make_model(0).state_dict(), task.make_model(0).state_dict(), task.make_model(1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    fine_tuned = int(task.cfg.get("pretrain_steps") or 0) > 0  # every seed starts from the one pretrained checkpoint
    assert any(not torch.equal(a[k], c[k]) for k in a) != fine_tuned
    # different seeds also give different data orders
    batch0, batch0b, batch1 = next(iter(task.train_batches(0))), next(iter(task.train_batches(0))), next(iter(task.train_batches(1)))
    flat = lambda batch: batch[0] if isinstance(batch, tuple) else batch  # noqa: E731
    assert torch.equal(flat(batch0), flat(batch0b))
    assert not torch.equal(flat(batch0), flat(batch1))
    other = run(task, 1)
    assert (other.curve[0]["valid_loss"] != first.curve[0]["valid_loss"]) != fine_tuned
    assert other.curve[-1]["valid_loss"] != first.curve[-1]["valid_loss"]  # the data order differs


def test_char_lm_num_params_excludes_embeddings(small_tasks):
    task = small_tasks["char_lm"]
    model = task.make_model(0)
    cfg = task.cfg
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    embeddings = 256 * cfg.d_model + cfg.context * cfg.d_model
    assert task.embedding_params(model) == embeddings
    assert task.num_params == total - embeddings
    assert 0 < task.num_params < total


def test_char_lm_trains_on_user_text(cache_dir, tmp_path):
    words = "the cat sat on a mat and the dog ran to the log while a bird sang in the tree".split()
    gen = torch.Generator().manual_seed(0)
    text = " ".join(words[int(i)] for i in torch.randint(len(words), (12000,), generator=gen)) + "\n"
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")

    cfg = small_cfg("char_lm", f"task.text_path={path}")
    task = build_task(cfg.task)
    alphabet = set(text.encode())
    seen = set(torch.cat([task.x_train.flatten(), task.y_train.flatten(), task.x_valid.flatten()]).tolist())
    assert seen <= alphabet  # the data came from the user's file, not the default text
    result = run(task, 0)
    assert result.status == "done" and result.steps == 30
    assert result.curve[-1]["valid_loss"] < result.curve[0]["valid_loss"]

    from lhopt_cli.config.compose import ConfigError

    with pytest.raises(ConfigError, match="task.text_path: no such file"):  # refused when the config is composed
        small_cfg("char_lm", f"task.text_path={tmp_path / 'missing.txt'}")


@pytest.mark.parametrize("name", NAMES)
def test_default_config_has_at_least_20_eval_points(monkeypatch, name):
    """Default configs, built as-is (mnist1d's default data are generated once, then cached)."""
    if USER_CACHE is None:
        monkeypatch.delenv("LHOPT_CACHE", raising=False)
    else:
        monkeypatch.setenv("LHOPT_CACHE", USER_CACHE)
    task = build_task(compose("baseline_grid", [f"task={name}"]).task)
    steps = task.eval_steps()
    assert task.total_steps == task.steps_per_epoch  # no cap by default: one full epoch
    assert len(steps) >= 20
    assert steps[-1] == task.total_steps
    assert steps == sorted(set(steps)) and steps[0] >= 1


def test_generated_languages_are_fixed_by_their_data_seed_and_differ_between_seeds(cache_dir):
    for name in ("markov_lm", "sequence_classification"):
        a, b = build_task(small_cfg(name).task), build_task(small_cfg(name).task)
        other = build_task(small_cfg(name, "task.data_seed=1").task)
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_valid, b.y_valid)
        assert not torch.equal(a.x_train, other.x_train)


def test_the_markov_language_is_predictable_and_its_sources_distinguishable(cache_dir):
    """Entropy well below uniform: the languages have something to learn."""
    lm = build_task(small_cfg("markov_lm").task)
    x, y = lm.x_train[:, 1:].reshape(-1), lm.y_train[:, 1:].reshape(-1)
    prev = lm.x_train[:, :-1].reshape(-1)
    vocab = int(lm.cfg.vocab)
    counts = torch.zeros(vocab * vocab, vocab)
    counts.index_put_((prev * vocab + x, y), torch.ones_like(y, dtype=torch.float), accumulate=True)
    probs = counts / counts.sum(1, keepdim=True).clamp_min(1)
    entropy = -(counts * probs.clamp_min(1e-12).log()).sum() / counts.sum()
    assert entropy < 0.6 * math.log(vocab)
    clf = build_task(small_cfg("sequence_classification").task)
    assert set(clf.y_train.tolist()) == set(range(int(clf.cfg.classes)))
    assert clf.build_model()(clf.x_valid[:5]).shape == (5, int(clf.cfg.classes))
