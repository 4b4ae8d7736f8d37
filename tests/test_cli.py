"""The CLI through typer's CliRunner and the installed console script: help, --cfg, bad input."""
import re
import subprocess
import sys

import pytest
import yaml

from conftest import LHOPT, lhopt_env
from lhopt_cli.commands.cli import main

KNOWN_TASKS = ("algorithmic, char_lm, char_lm_finetune, cnn_mnist, co2_forecast, code_lm, digits_transformer, "
               "fair_tabular, friedman_regression, lorenz_forecast, markov_lm, mlp_digits, mlp_mnist, mnist1d_conv, "
               "mnist1d_lstm, mnist1d_transformer, mnist_autoencoder, nqm, patch_autoencoder, randhie_regression, "
               "resnet_mnist, sequence_classification, synthetic_tabular")


def test_help_lists_all_four_commands(run_cli):
    result = run_cli("--help")
    assert result.exit_code == 0
    for command in ("train-policy", "baseline-grid", "evaluate", "scaling-fit"):
        assert command in result.output


@pytest.mark.parametrize("command, literals", [
    ("evaluate", ["decisions_<task>_s<seed>.csv", "curves_<task>.png", "tasks=[mlp_mnist,char_lm] seeds=[0,1,2]",
                  "suite=validation_heldout"]),
    ("train-policy", ["validation_speedup[_polyak]", "ppo.anchor_coef", "resume=true"]),
    ("baseline-grid", ["seeds=[0,1,2]", "--multirun"]),
    ("scaling-fit", ["inputs=[logs.csv]", "columns.*"]),
])
def test_each_command_help_keeps_its_literals_and_flows_as_paragraphs(command, literals):
    proc = subprocess.run([str(LHOPT), command, "--help"], capture_output=True, text=True, timeout=120,
                          env={**lhopt_env(), "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(line.strip(" │") for line in proc.stdout.splitlines())
    for literal in literals:  # markup neither eats nor escapes them
        assert literal in flat, literal
    assert "`" not in proc.stdout and "\\[" not in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80  # wrapped to the terminal, not ragged


def test_scaling_fit_without_inputs_is_one_clear_error(run_cli, tmp_path):
    result = run_cli("scaling-fit", f"run_dir={tmp_path}")
    assert result.exit_code != 0 and "inputs=[...]" in str(result.exception)


def test_cfg_prints_composed_config_with_overrides(run_cli):
    result = run_cli("baseline-grid", "--cfg", "task=char_lm", "seeds=[0,1]", "task.n_layer=3")
    assert result.exit_code == 0
    cfg = yaml.safe_load(result.output)
    assert cfg["task"]["name"] == "char_lm" and cfg["task"]["n_layer"] == 3
    assert cfg["seeds"] == [0, 1]
    assert len(cfg["grid"]["lrs"]) == 5 and len(cfg["grid"]["schedules"]) == 7


def test_debug_smoke_shrinks_runs(run_cli):
    cfg = yaml.safe_load(run_cli("baseline-grid", "--cfg", "debug=smoke").output)
    assert cfg["task"]["max_steps"] <= 10


@pytest.mark.parametrize("config_group", ["task=mlp_mnist", "task=cnn_mnist", "task=mnist1d_conv", "task=char_lm",
                                          "task=nqm", "task=mlp_digits", "task=algorithmic", "grid=default", "executor=local",
                                          "debug=smoke"])
def test_every_config_group_option_composes(run_cli, config_group):
    assert run_cli("baseline-grid", "--cfg", config_group).exit_code == 0


@pytest.mark.parametrize("config_group", ["task_family=default", "task_family=nqm_low_lr", "controller=default",
                                          "ppo=default", "debug=smoke"])
def test_every_train_policy_group_option_composes(run_cli, config_group):
    result = run_cli("train-policy", "--cfg", config_group)
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.output)
    assert cfg["command"] == "train-policy" and cfg["ppo"]["clip_coef"] == 0.2


@pytest.mark.parametrize(
    "override, expected",
    [
        ("task=foo", f"unknown task 'foo'; known: {KNOWN_TASKS}"),
        ("+foo=1", "Key 'foo' not in"),
        ("nonsense=1", "unknown key 'nonsense'; `--cfg` prints every key"),
        ("grid.lr=1", "unknown key 'grid.lr'; did you mean grid.lrs?"),  # not Hydra's "+grid.lr=1", which fails next
        ("task.batch_size=abc", "task.batch_size"),
        ("seeds=zero", "seeds"),
        ("grid.schedules=[cosine,bogus]", "unknown schedule 'bogus'"),
        ("executor=slurm", "unknown executor 'slurm'; known: local"),
        ("+task.hiden=3", "Key 'hiden' not in"),
        ("grid.lrs=[-1.0]", "positive"),
        ("grid.lrs=[nan]", "grid.lrs must be positive and finite (got nan)"),
        ("grid.lrs=[inf]", "grid.lrs must be positive and finite (got inf)"),
        ("seeds=[99999999999999999999]", "seeds must lie in [0, 2^32)"),
        ("seeds=[-1]", "seeds must lie in [0, 2^32)"),
        ("executor.workers=-3", "executor.workers must be at least 0"),
        ("grid.beta1=1.5", "grid.beta1 must lie in [0, 1) (got 1.5)"),
        ("grid.eps=-1", "grid.eps must lie in (0, 1] (got -1)"),
        ("grid.clip_fraction=nan", "grid.clip_fraction must lie in (0, 1] (got nan)"),
        ("grid.weight_decay=-0.1", "grid.weight_decay must lie in [0, 1] (got -0.1)"),
    ],
)
def test_bad_overrides_give_one_clear_line_and_nonzero_exit(tmp_path, monkeypatch, capsys, override, expected):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["lhopt", "baseline-grid", override, f"run_dir={run_dir}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code not in (0, None)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert not run_dir.exists()  # nothing is written for a config that does not validate


def test_console_script_reports_bad_input_in_one_line(tmp_path):
    proc = subprocess.run([str(LHOPT), "baseline-grid", "task=foo"], capture_output=True, text=True,
                          env=lhopt_env(), timeout=120, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: unknown task 'foo'; known: {KNOWN_TASKS}"]


@pytest.mark.parametrize("command, group", [("scaling-fit", "experiment=scaling_char_lm"), ("evaluate", "debug=smoke"),
                                            ("evaluate", "protocol.decisions=64")])
def test_evaluate_and_scaling_fit_groups_compose(run_cli, command, group):
    result = run_cli(command, "--cfg", group)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["command"] == command


def test_evaluate_with_an_unknown_task_is_refused_before_any_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lhopt", "evaluate", "tasks=[nosuch]", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == f"error: unknown task 'nosuch'; known: {KNOWN_TASKS}"
    assert not (tmp_path / "run").exists()


def test_evaluate_with_an_empty_task_list_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lhopt", "evaluate", "tasks=[]", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == ("error: tasks=[] names no task; give task names (tasks=[mlp_mnist]) "
                                               "or suite=test / suite=validation")
    assert not (tmp_path / "run").exists()


def test_a_byte_model_reads_a_latin_1_file_as_its_bytes(tmp_path):
    from lhopt_cli.config.compose import compose
    from lhopt_cli.tasks import build_task

    text = b"".join([b"cr\xe8me ", b"caf\xe9 ", b"na\xefve ", b"the "][i % 4] for i in range(4000))  # not UTF-8
    path = tmp_path / "latin1.txt"
    path.write_bytes(text)
    task = build_task(compose("baseline_grid", ["task=char_lm", "debug=smoke", f"task.text_path={path}"]).task)
    window = task.x_train.shape[1]
    first = bytes(task.x_train[0].tolist()) + bytes([int(task.y_train[0, -1])])
    assert first == text[: window + 1]  # byte for byte: no UTF-8 replacement characters
    assert 0xE8 in task.x_train.flatten().tolist() and 0xEF in task.x_train.flatten().tolist()


@pytest.mark.parametrize("content, expected", [(b"", "is empty"), (b"x" * 49, "has 49 bytes")])
def test_a_text_file_too_short_for_one_batch_is_one_line_before_any_run_folder(tmp_path, monkeypatch, capsys,
                                                                              content, expected):
    path = tmp_path / "text.txt"
    path.write_bytes(content)
    monkeypatch.setattr(sys, "argv", ["lhopt", "baseline-grid", "task=char_lm", f"task.text_path={path}",
                                      f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: task.text_path {path} {expected}: a byte model")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, expected", [
    (["hydra.run.dir=/tmp/x"], "error: hydra.run.dir is not read here: lhopt writes a command's files into run_dir; "
                               "use run_dir=/tmp/x"),
    (["-cd", "/tmp"], "error: -cd: lhopt's configs are built in"),
    (["--config-dir=/tmp"], "error: --config-dir: lhopt's configs are built in"),
    (["hydra.job.chdir=true"], "error: hydra.job.chdir: hydra.* settings apply to `lhopt baseline-grid -m` sweeps only"),
    (["--cfg", "hydra"], "error: --cfg hydra: lhopt has no Hydra runtime config"),
])
def test_hydra_habits_are_answered_in_one_line(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lhopt", "baseline-grid", "debug=smoke", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "x").exists()


def test_cfg_job_prints_the_config_as_cfg_does(run_cli):
    plain, hydra_style = run_cli("baseline-grid", "--cfg", "debug=smoke"), run_cli("baseline-grid", "--cfg", "job",
                                                                                   "debug=smoke")
    assert plain.exit_code == hydra_style.exit_code == 0
    assert hydra_style.output == plain.output and "command: baseline-grid" in plain.output


@pytest.mark.parametrize("command, override, key, expected", [
    ("evaluate", "tasks=mlp_digits", "tasks", ["mlp_digits"]),
    ("evaluate", "seeds=3", "seeds", [3]),
    ("baseline-grid", "grid.schedules=cosine", "grid", None),
])
def test_one_value_where_a_list_is_expected_is_a_list_of_one(run_cli, command, override, key, expected):
    result = run_cli(command, "--cfg", override)
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.output)
    assert cfg[key] == expected if expected is not None else cfg["grid"]["schedules"] == ["cosine"]


@pytest.mark.parametrize("command, groups", [
    ("baseline-grid", ["task=", "grid=", "executor=", "debug="]),
    ("train-policy", ["task_family=", "controller=", "ppo=", "executor=", "experiment=", "debug="]),
    ("evaluate", ["grid=", "executor=", "suite=", "debug="]),
    ("scaling-fit", ["experiment=", "debug="]),
])
def test_every_commands_help_lists_its_config_groups_and_their_options(command, groups):
    proc = subprocess.run([str(LHOPT), command, "--help"], capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert proc.returncode == 0 and "Config groups" in proc.stdout, proc.stdout
    for group in groups:
        assert group in proc.stdout, group
    if command == "evaluate":
        assert "validation_heldout" in proc.stdout and "test" in proc.stdout


@pytest.mark.parametrize("command, flag, message", [
    ("evaluate", "-m", "-m: `lhopt evaluate` runs one job; give lists in one command"),
    ("train-policy", "--multirun", "--multirun: `lhopt train-policy` runs one job"),
    ("evaluate", "--info", "--info: not an lhopt flag; --help lists the config groups"),
    ("scaling-fit", "--hydra-help", "--hydra-help: not an lhopt flag"),
])
def test_hydra_flags_lhopt_does_not_take_are_refused_in_one_line(tmp_path, command, flag, message):
    proc = subprocess.run([str(LHOPT), command, flag, "seeds=[0],[1]" if flag == "-m" else "debug=smoke",
                           f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True, env=lhopt_env(), timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: {message}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["--help"], ["evaluate", "--help"], ["evaluate", "grid.lr=1"],
                                  ["baseline-grid", "task=foo"], ["train-policy", "--cfg"], ["scaling-fit", "--info"]])
def test_help_and_config_errors_do_not_wait_for_torch(args):
    code = ("import sys\nfrom lhopt_cli.commands.cli import main\nsys.argv = ['lhopt', *sys.argv[1:]]\ntry:\n    main()\n"
            "except SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=lhopt_env(),
                          timeout=120)
    assert proc.stderr.strip().endswith("torch imported: False"), proc.stderr[-1000:]


def test_a_text_path_that_is_not_a_regular_file_says_what_it_is(tmp_path):
    import os
    import subprocess

    from conftest import LHOPT, lhopt_env

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, what in [("/dev/zero", "is a character device"), (str(fifo), "is a named pipe (FIFO)"),
                       (str(tmp_path), "is a folder"), (str(tmp_path / "none.txt"), "no such file")]:
        proc = subprocess.run([str(LHOPT), "baseline-grid", "debug=smoke", "task=char_lm", f"task.text_path={path}",
                               f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True, env=lhopt_env(), timeout=60)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
            f"error: task.text_path: {path} {what}, not a text file" if what != "no such file"
            else f"error: task.text_path: no such file: {path}"], proc.stderr
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["evaluate", "-c", "job"], "error: -c: not an option of `lhopt evaluate`"),
    (["baseline-grid", "-m", "task=nqm", "debug=smoke", "--cfg"], "error: --cfg with -m: a sweep has one config per job"),
    (["baseline-grid", "-m", "task=nqm", "--info"], "error: --info: not an option of `lhopt baseline-grid -m`"),
    (["train-policy", "-m"], "error: -m: `lhopt train-policy` runs one job; one meta-training run per command"),
    (["scaling-fit", "-m"], "error: -m: `lhopt scaling-fit` runs one job; give every folder or table in one command"),
    (["scaling-fit", "experiment=tuned_reference", "--cfg"],
     "error: experiment=tuned_reference sets keys `lhopt scaling-fit` does not have (another command's experiment); "
     "scaling-fit's: scaling_char_lm"),
])
def test_flags_and_group_choices_a_command_cannot_take_are_one_line(args, message):
    import subprocess

    from conftest import LHOPT, lhopt_env

    proc = subprocess.run([str(LHOPT), *args], capture_output=True, text=True, env=lhopt_env(), timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(message), proc.stderr


def test_short_help_and_the_version():
    import subprocess

    from conftest import LHOPT, lhopt_env

    version = subprocess.run([str(LHOPT), "--version"], capture_output=True, text=True, env=lhopt_env(), timeout=60)
    assert version.returncode == 0 and re.fullmatch(r"lhopt \d+\.\d+\.\d+\S*\n", version.stdout)
    for args in (["-h"], ["evaluate", "-h"]):
        shown = subprocess.run([str(LHOPT), *args], capture_output=True, text=True, env=lhopt_env(), timeout=60)
        assert shown.returncode == 0 and "Usage: lhopt" in shown.stdout
    listed = subprocess.run([str(LHOPT), "scaling-fit", "--help"], capture_output=True, text=True, env=lhopt_env(),
                            timeout=60)
    evaluate_help = subprocess.run([str(LHOPT), "evaluate", "--help"], capture_output=True, text=True,
                                   env=lhopt_env(), timeout=60).stdout
    assert "scaling_char_lm" in listed.stdout and "tuned_reference" not in listed.stdout
    assert "(default)" in evaluate_help  # the default is said in words, not only in bold (lost in a pipe)
