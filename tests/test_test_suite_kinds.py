"""The test suite's task kinds (no training family draws them): real data from installed
packages, one epoch trainable by the single loop and the batched engine alike. The leave-kinds-out
validation kinds (tasks/heldout.py) are tested in test_leave_kinds_out.py."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from lhopt_cli.config.compose import compose
from lhopt_cli.inner import HParams, train_one_epoch
from lhopt_cli.inner.batched import train_batched
from lhopt_cli.tasks import build_task

TEST_KINDS = ["code_lm", "fair_tabular", "randhie_regression", "co2_forecast", "patch_autoencoder", "resnet_mnist",
            "digits_transformer"]


def task_config(name: str, *overrides: str) -> dict:
    return OmegaConf.to_container(compose("baseline_grid", [f"task={name}", *overrides]).task, resolve=True)


@pytest.mark.parametrize("name", TEST_KINDS)
def test_a_held_out_task_trains_in_both_engines(name):
    task = build_task(task_config(name, "task.max_steps=12", "task.eval_points=3", "task.valid_size=256"))
    full = build_task(task_config(name))
    assert 150 <= full.total_steps <= 2000  # one epoch of the full task
    single = train_one_epoch(task, 0, hparams=HParams(lr=3e-3))
    assert single.status == "done" and [r["step"] for r in single.curve] == [0, 4, 8, 12]
    assert all(math.isfinite(r["valid_loss"]) for r in single.curve)
    assert single.curve[-1]["valid_loss"] < single.curve[0]["valid_loss"]  # 12 steps at lr 3e-3 learn something
    (member,) = train_batched(task, [0], hparams=[HParams(lr=3e-3)])  # vmappable (GRUs written with nn.Linear)
    assert member.final_valid_loss == pytest.approx(single.final_valid_loss, rel=1e-4)


def test_the_forecast_is_judged_on_weeks_after_the_training_weeks():
    from lhopt_cli.tasks.data import co2_weekly

    task = build_task(task_config("co2_forecast"))
    window, horizon = int(task.cfg.window), int(task.cfg.horizon)
    series = torch.from_numpy(co2_weekly())
    cut = int(0.8 * len(series))
    h = horizon

    def change(t: int, last: int) -> float:  # the series at week t relative to the last observed week
        return float(series[t] - series[last])

    assert task.x_train.shape[1:] == (window,) and task.y_train.shape[1:] == (horizon,)
    assert float(task.y_train.std()) == pytest.approx(1.0, rel=1e-3)  # scaled by the training changes' spread
    assert float(task.x_valid[0, -1]) == 0.0  # each window is relative to its last observed week
    # training targets end at the cut; validation targets start after it and end with the series
    assert float(task.y_train[-1, -1] / task.y_train[-1, 0]) == pytest.approx(
        change(cut - 1, cut - 1 - h) / change(cut - h, cut - 1 - h), rel=1e-4)
    assert float(task.y_valid[0, -1] / task.y_valid[0, 0]) == pytest.approx(
        change(cut + h - 1, cut - 1) / change(cut, cut - 1), rel=1e-4)
    n = len(series)
    assert float(task.y_valid[-1, -1] / task.y_valid[-1, 0]) == pytest.approx(
        change(n - 1, n - 1 - h) / change(n - h, n - 1 - h), rel=1e-4)


def test_autoencoder_and_tabular_data_are_what_they_say():
    from lhopt_cli.tasks.autoencoder import VALID_IMAGES
    from lhopt_cli.tasks.data import GRAY_IMAGES

    ae = build_task(task_config("patch_autoencoder"))
    assert ae.x_train.shape == (2000 * (len(GRAY_IMAGES) - len(VALID_IMAGES)), 64) and torch.equal(ae.x_train, ae.y_train)
    assert 0.0 <= float(ae.x_train.min()) and float(ae.x_train.max()) <= 1.0
    fair = build_task(task_config("fair_tabular"))
    assert set(fair.y_train.unique().tolist()) == {0, 1} and len(fair.x_train) + len(fair.x_valid) == 6366
    assert fair.x_train.mean(0).abs().max() < 1e-4  # standardised on the training split
    randhie = build_task(task_config("randhie_regression"))
    assert len(randhie.x_train) + len(randhie.x_valid) == 20190 and float(randhie.y_train.min()) >= 0.0


def test_fine_tuning_starts_every_seed_from_one_cached_checkpoint_pretrained_on_code(tmp_path, monkeypatch):
    from lhopt_cli.tasks.data import python_source
    from lhopt_cli.tasks.pretrain import pretrained_path

    monkeypatch.setenv("LHOPT_CACHE", str(tmp_path))
    cfg = task_config("char_lm_finetune", "task.pretrain_steps=30", "task.max_chars=60000", "task.max_steps=5",
                      "task.eval_points=1")
    task = build_task(cfg)
    fresh = build_task({**cfg, "pretrain_steps": 0})  # the same network from its random initialisation
    a, b = task.make_model(0).state_dict(), task.make_model(1).state_dict()
    path = pretrained_path(task.cfg)
    assert path.is_file() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], v) for k, v in fresh.make_model(0).state_dict().items())
    code = next(iter(task.pretrain_batches()))  # the source corpus: Python code, not the prose it fine-tunes on
    context = int(task.cfg.context)
    assert bytes(code[0][0].tolist()) == python_source(context).encode()[:context]
    assert bytes(code[0][0].tolist()) != bytes(task.x_train[0].tolist())
    with torch.no_grad():  # pretraining lowered the loss on code
        assert task.loss(task.make_model(0), code) < fresh.loss(fresh.make_model(0), code)
    path.write_bytes(b"not a checkpoint")  # a damaged cache is computed again, to the same weights
    again = build_task(cfg).make_model(2).state_dict()
    assert all(torch.equal(a[k], again[k]) for k in a)
    # the pretrained weights depend on how they were trained, not on how the run is observed
    assert pretrained_path({**task.cfg, "eval_points": 7}) == path
    assert pretrained_path({**task.cfg, "batch_size": 8}) != path
    result = train_one_epoch(task, 0, hparams=HParams(lr=1e-4))
    assert result.status == "done" and result.steps == 5
