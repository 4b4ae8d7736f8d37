"""Fine-tuning episodes in the meta-training family: instances that start from a checkpoint of
their own problem, whose best learning rate is lower than a fresh instance's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lhopt_cli.inner import HParams, train_one_epoch
from lhopt_cli.tasks import build_task
from lhopt_cli.tasks.families import FamilyError, TaskFamily
from lhopt_cli.tasks.pretrain import pretrained_path

TABLE = {"name": "synthetic_tabular", "num_train": 2000, "num_valid": 500, "features": 20, "informative": 8,
         "classes": 4, "flip": 0.05, "data_seed": 3, "hidden": [64, 64], "activation": "relu", "norm": "none",
         "batch_size": 16, "eval_points": 3, "max_steps": None, "valid_size": None}
SEQUENCES = {"name": "algorithmic", "problem": "xor", "cell": "gru", "hidden": 16, "length": 6, "num_train": 320,
             "num_valid": 100, "batch_size": 16, "eval_points": 2, "max_steps": None, "valid_size": None}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LHOPT_CACHE", str(tmp_path))


@pytest.mark.parametrize("cfg", [TABLE, SEQUENCES], ids=["synthetic_tabular", "algorithmic"])
def test_a_fine_tuning_instance_starts_every_seed_from_its_pretrained_checkpoint(cfg):
    fresh, tuned = build_task({**cfg, "pretrain_steps": 0}), build_task({**cfg, "pretrain_steps": 300})
    a, b = tuned.make_model(0).state_dict(), tuned.make_model(1).state_dict()
    assert pretrained_path(tuned.cfg).is_file() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():  # pretraining on unseen rows of the same problem lowered the validation loss
        assert tuned.valid_loss(tuned.make_model(0)) < fresh.valid_loss(fresh.make_model(0)) - 0.005
    # the pretraining data are drawn apart from the training rows (short xor sequences repeat, tables do not)
    x_pre = next(iter(tuned.pretrain_batches()))[0]
    assert not torch.equal(x_pre, tuned.x_train[:len(x_pre)])
    if cfg is TABLE:
        assert not any(torch.equal(x_pre[0], row) for row in tuned.x_train)
    # a scaled instance fine-tunes from the same cached weights
    assert pretrained_path({**tuned.cfg, "param_scale": 10.0}) == pretrained_path(tuned.cfg)


def test_a_long_pretraining_moves_the_best_lr_of_a_sweep_down():
    lrs = [3e-4, 1e-3, 3e-3, 1e-2]

    def best(task):
        losses = [train_one_epoch(task, 0, hparams=HParams(lr=lr)).final_valid_loss for lr in lrs]
        return lrs[int(np.argmin(losses))]

    assert best(build_task({**TABLE, "pretrain_steps": 0})) == 1e-2
    assert best(build_task({**TABLE, "pretrain_steps": 2000})) <= 1e-3


def test_a_share_of_a_kinds_instances_fine_tunes_and_families_without_it_sample_as_before():
    kinds = {"kinds": {"synthetic_tabular": {"num_train": [2000, 4000], "batch_size": [4, 64]}}}
    plain = [TaskFamily(kinds).sample(np.random.default_rng(s)) for s in range(5)]
    assert all("pretrain_steps" not in c for c in plain)
    family = TaskFamily({"kinds": {"synthetic_tabular": {**kinds["kinds"]["synthetic_tabular"],
                                                         "pretrain_steps": [200, 4000], "pretrain_share": 0.5}}})
    steps = [family.sample(np.random.default_rng(s))["pretrain_steps"] for s in range(200)]
    tuned = [s for s in steps if s > 0]
    assert 70 < len(tuned) < 130 and all(200 <= s <= 4000 for s in tuned)


@pytest.mark.parametrize("spec, message", [
    ({"pretrain_steps": [10, 20], "pretrain_share": 1.5}, "pretrain_share must be a number in [0, 1]"),
    ({"pretrain_share": 0.5}, "pretrain_share needs a pretrain_steps range"),
])
def test_a_bad_fine_tuning_share_is_one_line(spec, message):
    with pytest.raises(FamilyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TaskFamily({"kinds": {"synthetic_tabular": spec}})


def test_the_finetune_family_composes_and_keeps_the_test_kinds_out():
    from omegaconf import OmegaConf

    from lhopt_cli.config.compose import compose

    cfg = compose("train_policy", ["task_family=find_lr_finetune"])
    kinds = cfg.task_family.kinds
    assert kinds.synthetic_tabular.pretrain_share == 0.5 and list(kinds.algorithmic.pretrain_steps) == [100, 2000]
    assert "char_lm_finetune" not in kinds and cfg.task_family.param_scale is not None
    family = TaskFamily(OmegaConf.to_container(cfg.task_family))
    rng = np.random.default_rng(0)
    assert any(family.sample(rng).get("pretrain_steps", 0) > 0 for _ in range(200))
