"""`lhopt train-policy` end to end: smoke run, policy file, resume after a kill."""
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import LHOPT, lhopt_env
from lhopt_cli.control.checkpoint import PolicyFileError, load_policy
from lhopt_cli.control.features import FEATURE_NAMES

SMOKE = ["debug=smoke", "task_family.kinds.mnist1d_conv.weight=0"]


def test_smoke_run_writes_log_and_a_loadable_policy(run_cli, tmp_path):
    result = run_cli("train-policy", *SMOKE, f"run_dir={tmp_path}")
    assert result.exit_code == 0, result.output
    log = pd.read_csv(tmp_path / "meta_train.csv")
    assert list(log.iteration) == [1, 2]
    for column in ("mean_episode_reward", "approx_kl", "clipfrac", "entropy", "explained_variance", "episodes_per_s"):
        assert column in log.columns
    assert (log.episodes == [4, 8]).all() and log.mean_episode_reward.between(-3, 3).all()
    agent, meta = load_policy(tmp_path / "policy.pt")
    assert meta["feature_names"] == list(FEATURE_NAMES) and meta["config"]["command"] == "train-policy"
    assert agent.obs_rms.count > 1  # the input normaliser travelled with the weights
    assert (tmp_path / "meta_training.png").stat().st_size > 10_000  # the curve, in the run folder
    assert f"figure: {tmp_path / 'meta_training.png'}" in result.output


def test_existing_run_needs_resume(run_cli, tmp_path):
    assert run_cli("train-policy", *SMOKE, f"run_dir={tmp_path}").exit_code == 0
    result = run_cli("train-policy", *SMOKE, f"run_dir={tmp_path}")
    assert result.exit_code != 0 and "resume=true" in str(result.exception)


def test_bad_policy_files_are_refused_in_one_line(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a policy")
    with pytest.raises(PolicyFileError, match="not a readable lhopt policy file"):
        load_policy(tmp_path / "junk.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(PolicyFileError, match="expected format 'lhopt-policy'"):
        load_policy(tmp_path / "other.pt")
    torch.save({"format": "lhopt-policy", "version": 99}, tmp_path / "future.pt")
    with pytest.raises(PolicyFileError, match="version 99, expected 1"):
        load_policy(tmp_path / "future.pt")
    with pytest.raises(PolicyFileError, match="no such policy file"):
        load_policy(tmp_path / "missing.pt")


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_ends_a_run_with_its_worker_processes_and_it_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = [*SMOKE, "ppo.iterations=400", "workers=2", "executor.workers=2", "envs=3", "checkpoint_every=1"]
    proc = subprocess.Popen([str(LHOPT), "train-policy", *args, f"run_dir={run_dir}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=lhopt_env())
    log = run_dir / "meta_train.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    workers = _children(proc.pid)
    assert len(workers) >= 2  # the rollout worker processes (and multiprocessing's helpers)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("interrupted: finished work is saved")
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "worker processes outlived the stopped run"
    resumed = subprocess.run([str(LHOPT), "train-policy", *args, "ppo.iterations=3", "resume=true",
                              f"run_dir={run_dir}"], capture_output=True, text=True, env=lhopt_env(), timeout=600)
    assert resumed.returncode == 0 and "Resuming from iteration" in resumed.stdout, resumed.stderr


def test_killed_run_resumes_to_the_same_outcome(tmp_path):
    args = [*SMOKE, "ppo.iterations=6", "checkpoint_every=2", "envs=3"]
    straight = tmp_path / "straight"
    done = subprocess.run([str(LHOPT), "train-policy", *args, f"run_dir={straight}"], capture_output=True,
                          text=True, env=lhopt_env(), timeout=600)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen([str(LHOPT), "train-policy", *args, f"run_dir={killed}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=lhopt_env())
    log = killed / "meta_train.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (killed / "checkpoint.pt").exists() and log.exists() and len(log.read_text().splitlines()) >= 4:
            break  # the checkpoint at iteration 2 and at least one more logged iteration
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "policy.pt").exists()
    resumed = subprocess.run([str(LHOPT), "train-policy", *args, "resume=true", f"run_dir={killed}"],
                             capture_output=True, text=True, env=lhopt_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from iteration" in resumed.stdout

    a, b = pd.read_csv(straight / "meta_train.csv"), pd.read_csv(killed / "meta_train.csv")
    assert list(b.iteration) == [1, 2, 3, 4, 5, 6]
    timing = ["episodes_per_s", "rollout_s", "update_s"]
    pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing))
    weights_a, _ = load_policy(straight / "policy.pt")
    weights_b, _ = load_policy(killed / "policy.pt")
    for (name, x), (_, y) in zip(weights_a.state_dict().items(), weights_b.state_dict().items()):
        assert torch.equal(x, y), name


def test_rollout_workers_in_local_processes_match_this_process(run_cli, tmp_path):
    timing = ["episodes_per_s", "rollout_s", "update_s"]
    logs = []
    for processes in (1, 2):
        run_dir = tmp_path / f"p{processes}"
        result = run_cli("train-policy", *SMOKE, "workers=2", f"executor.workers={processes}", f"run_dir={run_dir}")
        assert result.exit_code == 0, result.output
        logs.append(pd.read_csv(run_dir / "meta_train.csv").drop(columns=timing))
    assert list(logs[0].episodes) == [8, 16]  # 2 workers x 4 episodes per iteration
    pd.testing.assert_frame_equal(logs[0], logs[1])
    a, _ = load_policy(tmp_path / "p1" / "policy.pt")
    b, _ = load_policy(tmp_path / "p2" / "policy.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_resume_with_another_worker_count_is_one_line(run_cli, tmp_path):
    assert run_cli("train-policy", *SMOKE, "workers=2", f"run_dir={tmp_path}").exit_code == 0
    result = run_cli("train-policy", *SMOKE, "workers=1", "resume=true", f"run_dir={tmp_path}")
    assert result.exit_code != 0 and "resume it with workers=2" in str(result.exception)


def test_the_policy_file_fixes_its_observation_protocol(run_cli, tmp_path):
    result = run_cli("train-policy", *SMOKE, "controller.stats_every=2", "controller.eval_points=10",
                     "controller.eval_decisions=32", "controller.min_interval=3", "controller.lr_decay=linear",
                     f"run_dir={tmp_path}")
    assert result.exit_code == 0, result.output
    _, meta = load_policy(tmp_path / "policy.pt")
    assert meta["protocol"] == {"decisions": 32, "stats_every": 2, "eval_points": 10, "parameter_count": "all",
                                "min_interval": 3, "lr_decay": "linear"}
    refused = run_cli("train-policy", *SMOKE, "+task_family.eval_points=14", f"run_dir={tmp_path / 'other'}")
    assert refused.exit_code != 0 and "eval_points=14 contradicts" in str(refused.exception)


def test_a_resume_under_another_protocol_and_family_validations_that_contradict_it_are_refused(run_cli, tmp_path):
    assert run_cli("train-policy", *SMOKE, "controller.stats_every=2", f"run_dir={tmp_path}").exit_code == 0
    again = run_cli("train-policy", *SMOKE, "resume=true", "ppo.iterations=3", f"run_dir={tmp_path}")
    assert again.exit_code != 0 and "resume it with controller.stats_every=2" in str(again.exception)
    for override, message in (("+task_family.kinds.nqm.eval_points=7", "task_family.kinds.nqm: eval_points=7 contradicts"),
                              ("+task_family.eval_points=null", "eval_points=null; leave it unset")):
        refused = run_cli("train-policy", *SMOKE, override, f"run_dir={tmp_path / 'other'}")
        assert refused.exit_code != 0 and message in str(refused.exception)


def test_init_policy_starts_meta_training_from_a_policy_file(smoke_policy, run_cli, tmp_path):
    from lhopt_cli.commands import train_policy
    from lhopt_cli.config.compose import compose

    cfg = compose("train_policy", [*SMOKE, "ppo.polyak=0.99", f"init_policy={smoke_policy}", f"run_dir={tmp_path / 'a'}"])
    ppo = train_policy.build(train_policy.plan(cfg, tmp_path / "a"))
    try:
        started, _ = load_policy(smoke_policy)
        for name, value in started.state_dict().items():  # weights, critic and input normaliser
            assert torch.equal(ppo.agent.state_dict()[name], value), name
        for name, value in ppo.polyak_agent().state_dict().items():  # the average starts there too
            assert torch.equal(started.state_dict()[name], value), name
    finally:
        ppo.workers.close()
    fresh = compose("train_policy", [*SMOKE, f"run_dir={tmp_path / 'b'}"])
    ppo = train_policy.build(train_policy.plan(fresh, tmp_path / "b"))
    try:
        assert not all(torch.equal(ppo.agent.state_dict()[k], v) for k, v in started.state_dict().items())
    finally:
        ppo.workers.close()
    copy = tmp_path / "start.pt"
    copy.write_bytes(smoke_policy.read_bytes())
    result = run_cli("train-policy", *SMOKE, f"init_policy={copy}", f"run_dir={tmp_path / 'c'}")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "policy.pt").exists()
    copy.unlink()  # a resumed run continues from its checkpoint, not from the file it started from
    result = run_cli("train-policy", *SMOKE, "ppo.iterations=3", "resume=true", f"init_policy={copy}",
                     f"run_dir={tmp_path / 'c'}")
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(tmp_path / "c" / "meta_train.csv").iteration) == [1, 2, 3]


@pytest.mark.parametrize("override", ["ppo.anchor_coef=-1", "ppo.anchor_coef=inf", "ppo.polyak=2", "ppo.learning_rate=nan",
                                      "ppo.update_epochs=0", "ppo.gamma=2", "reward_extrapolation=-1", "envs=0",
                                      "validation.suite=nosuch"])
def test_bad_ppo_settings_are_refused_before_the_run_folder_exists(tmp_path, override):
    run_dir = tmp_path / "new" / "run"
    proc = subprocess.run([str(LHOPT), "train-policy", *SMOKE, override, "validation.every=1", f"run_dir={run_dir}"],
                          capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    named = override.split("=")[0].split(".")[-1] if override.startswith("validation") else override.split("=")[0]
    assert (override.split("=")[1] if named == "suite" else named) in proc.stderr and not (tmp_path / "new").exists()


def test_an_anchored_run_holds_its_init_policy_as_the_anchor_through_a_resume(smoke_policy, run_cli, tmp_path):
    run_dir = tmp_path / "anchored"
    result = run_cli("train-policy", *SMOKE, "ppo.anchor_coef=1.0", f"init_policy={smoke_policy}", f"run_dir={run_dir}")
    assert result.exit_code == 0, result.output
    result = run_cli("train-policy", *SMOKE, "ppo.anchor_coef=1.0", "ppo.iterations=3", "resume=true",
                     f"init_policy={smoke_policy}", f"run_dir={run_dir}")
    assert result.exit_code == 0, result.output
    log = pd.read_csv(run_dir / "meta_train.csv")
    assert list(log.iteration) == [1, 2, 3] and (log.anchor_kl >= 0).all()
    started, _ = load_policy(smoke_policy)
    anchor = torch.load(run_dir / "checkpoint.pt", weights_only=False)["ppo"]["initial_weights"]
    for name, value in started.state_dict().items():
        assert torch.equal(anchor[name], value), name
    trained, _ = load_policy(run_dir / "policy.pt")
    assert not torch.equal(trained.state_dict()["actor.2.weight"], anchor["actor.2.weight"])


@pytest.mark.parametrize("override, message", [
    ("controller.hidden=32", "is another network; start it with controller.hidden=64"),
    ("controller.eval_decisions=32", "was trained under another observation protocol; start it with controller.eval_decisions=64"),
])
def test_init_policy_that_cannot_start_the_run_is_one_line_and_writes_nothing(smoke_policy, tmp_path, override, message):
    run_dir = tmp_path / "run"
    proc = subprocess.run([str(LHOPT), "train-policy", *SMOKE, override, f"init_policy={smoke_policy}",
                           f"run_dir={run_dir}"], capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr
    assert not run_dir.exists()  # a refused command leaves no folder of its own, not even its lock files
    nested = tmp_path / "new" / "deeper" / "run"
    proc = subprocess.run([str(LHOPT), "train-policy", *SMOKE, override, f"init_policy={smoke_policy}",
                           f"run_dir={nested}"], capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert proc.returncode == 1 and not (tmp_path / "new").exists()  # nor the parents it made
    missing = subprocess.run([str(LHOPT), "train-policy", *SMOKE, f"init_policy={tmp_path / 'none.pt'}",
                              f"run_dir={run_dir}"], capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert missing.returncode == 1 and "init_policy: " in missing.stderr and "no such policy file" in missing.stderr
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    subprocess.run([str(LHOPT), "train-policy", *SMOKE, override, f"init_policy={smoke_policy}",
                    f"run_dir={run_dir}"], capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]  # a user's folder stays as it was
    record = '{"command": "lhopt evaluate", "pid": 1}\n'
    (run_dir / ".lhopt.lock.json").write_text(record)  # an earlier command's holder record stays, unchanged
    subprocess.run([str(LHOPT), "train-policy", *SMOKE, override, f"init_policy={smoke_policy}",
                    f"run_dir={run_dir}"], capture_output=True, text=True, env=lhopt_env(), timeout=300)
    assert sorted(p.name for p in run_dir.iterdir()) == [".lhopt.lock.json", "notes.txt"]
    assert (run_dir / ".lhopt.lock.json").read_text() == record


def test_a_resume_of_a_complete_run_says_so_and_trains_nothing(run_cli, tmp_path):
    assert run_cli("train-policy", *SMOKE, "ppo.iterations=2", f"run_dir={tmp_path}").exit_code == 0
    kept = ("meta_train.csv", "checkpoint.pt", "policy.pt")  # the run's results (config.yaml records each command)
    before = {name: (tmp_path / name).read_bytes() for name in kept}
    for iterations in (2, 1):  # as many as done, or fewer: no "iteration 2 of 1" bar, nothing rewritten
        again = run_cli("train-policy", *SMOKE, "resume=true", f"ppo.iterations={iterations}", f"run_dir={tmp_path}")
        assert again.exit_code == 0, again.output
        assert f"complete, 2 PPO iterations done (ppo.iterations={iterations})" in again.output
        assert "Resuming" not in again.output
        assert {name: (tmp_path / name).read_bytes() for name in kept} == before


def test_smoke_runs_validate_on_the_smoke_suite_unless_told_otherwise(run_cli):
    import yaml

    smoke = yaml.safe_load(run_cli("train-policy", "--cfg", "debug=smoke").output)
    assert smoke["validation"]["suite"] == "smoke"  # 2 small tasks: no 12-member grid of smoke-sized runs to compute
    told = yaml.safe_load(run_cli("train-policy", "--cfg", "debug=smoke", "validation.suite=validation_heldout").output)
    assert told["validation"]["suite"] == "validation_heldout"
    assert yaml.safe_load(run_cli("train-policy", "--cfg").output)["validation"]["suite"] == "validation"


@pytest.mark.parametrize("damage, message", [
    (lambda lines: lines[:-1] + [lines[-1][: len(lines[-1]) // 2]], "the row of iteration 2 is torn"),
    (lambda lines: [lines[0], lines[2]], "rows are missing up to the checkpoint's iteration 2 (iteration 1)"),
])
def test_a_torn_or_gapped_log_is_refused_on_resume_in_one_line(run_cli, tmp_path, damage, message):
    assert run_cli("train-policy", *SMOKE, "ppo.iterations=2", "checkpoint_every=1", f"run_dir={tmp_path}").exit_code == 0
    log = tmp_path / "meta_train.csv"
    log.write_text("\n".join(damage(log.read_text().strip().splitlines())) + "\n")
    before = log.read_bytes()
    again = run_cli("train-policy", *SMOKE, "ppo.iterations=3", "resume=true", f"run_dir={tmp_path}")
    assert again.exit_code != 0 and message in str(again.exception), again.output
    assert log.read_bytes() == before  # nothing rewritten
