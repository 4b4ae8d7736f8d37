"""train-policy's rollout workers as Ray actors on a real local Ray instance (2 CPUs)."""
import os
from pathlib import Path
import signal
import threading
import time

import pytest
import torch

from lhopt_cli.commands import train_policy
from lhopt_cli.config.compose import compose

if os.environ.get("CI"):
    import ray  # CI installs the cluster extras: a missing engine fails here, never skips
else:
    ray = pytest.importorskip("ray", reason="the Ray extra is not installed: pip install 'lhopt-cli[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def build(executor: str, *extra: str):
    cfg = compose("train_policy", ["debug=smoke", "workers=2", f"executor={executor}", *extra])
    return train_policy.build(train_policy.plan(cfg, Path("unused-run-folder")))  # a folder never made


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def iterate(ppo, times: int) -> list[dict]:
    return [ppo.iterate() for _ in range(times)]


def test_two_ppo_iterations_on_two_actors_match_the_local_executor(local_ray):
    local = build("local")
    remote = build("ray")
    try:
        assert len(remote.workers.actors) == 2
        first = iterate(remote, 1)[0]
        # the rollouts: 2 actors x 4 episodes, each worker on its own stream, states moved on
        assert first["episodes"] == 8 and first["iteration"] == 1
        assert remote.worker_states[0]["env"] != remote.worker_states[1]["env"]
        sent = {k: v.clone() for k, v in remote.agent.state_dict().items()}
        second = iterate(remote, 1)[0]
        # the broadcast: both actors rolled out iteration 2 with the weights the learner had after
        # iteration 1's update; the learner has updated them since
        for actor in remote.workers.actors:
            assert same_weights(ray.get(actor.policy_weights.remote()), sent)
        assert not same_weights(remote.agent.state_dict(), sent)
        # the same seed and worker count: the same numbers and weights as in this process
        expected = iterate(local, 2)
        for got, want in zip([first, second], expected):
            for key in ("mean_episode_reward", "approx_kl", "entropy", "pg_loss", "v_loss", "global_step"):
                assert got[key] == want[key], key
        assert same_weights(remote.agent.state_dict(), local.agent.state_dict())
        for got, want in zip(remote.worker_states, local.worker_states):
            assert got["env"] == want["env"] and torch.equal(got["generator"], want["generator"])
    finally:
        remote.workers.close()


def test_an_actor_killed_mid_rollout_is_restarted_and_its_rollout_retried(local_ray):
    longer = ["debug.max_steps=400", "debug.decisions=[40,40]", "task_family.kinds.mnist1d_conv.weight=0"]
    remote = build("ray", *longer)
    try:
        victim = remote.workers.actors[0]
        pid = ray.get(victim.pid.remote())
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(remote.iterate()))
        thread.start()
        time.sleep(1.0)  # the learner has sent the weights; the actors are rolling out
        assert thread.is_alive(), "the rollout ended before the actor could be killed"
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=600)
        assert not thread.is_alive() and result["episodes"] == 8
        assert ray.get(victim.pid.remote()) != pid  # Ray restarted the actor and retried its call
        local = build("local", *longer)
        assert result["mean_episode_reward"] == local.iterate()["mean_episode_reward"]  # nothing lost or changed
        assert same_weights(remote.agent.state_dict(), local.agent.state_dict())
    finally:
        remote.workers.close()
