"""Files under $LHOPT_CACHE that are not whole or not ours are rebuilt, never a traceback."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lhopt_cli.config.compose import compose
from lhopt_cli.tasks import build_task


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LHOPT_CACHE", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("content", ["[1, 2, 3]", "7", '{"KEY": null}', '{"KEY": {"single": "fast", "2": -1}}',
                                     '{"KEY": [1]}', "\xff\xfe not json"])
def test_a_calibration_cache_of_the_wrong_shape_is_measured_again(cache, content):
    import torch

    from lhopt_cli.support.scheduling import measured_rates

    task = build_task(compose("baseline_grid", ["task=nqm", "task.dim=10", "task.steps=6", "task.eval_points=1"]).task)
    key = f"{torch.__version__}|{task.describe()}"
    (cache / "calibration.json").write_bytes(content.replace("KEY", json.dumps(key)[1:-1]).encode("latin-1"))
    single, batched = measured_rates(task, [2])
    assert single > 0 and batched[2] > 0
    stored = json.loads((cache / "calibration.json").read_text())
    assert isinstance(stored, dict) and stored[key]["single"] == single and stored[key]["2"] == batched[2]


@pytest.mark.parametrize("damage", ["truncated", "wrong_shape", "not_npz"])
def test_a_damaged_mnist1d_cache_is_made_again(cache, damage):
    from lhopt_cli.tasks.data import mnist1d

    fresh = mnist1d(300)
    path = next(cache.glob("mnist1d_n300_*.npz"))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "wrong_shape":
        np.savez(path, x=np.zeros((3, 2), np.float32), y=np.zeros(3, np.int64))
    else:
        path.write_text("not a zip file")
    again = mnist1d(300)
    assert np.array_equal(again["x"], fresh["x"]) and np.array_equal(again["y"], fresh["y"])
    assert np.array_equal(mnist1d(300)["x"], fresh["x"])  # and the rebuilt file reads whole
