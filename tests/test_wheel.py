"""The package installed as a wheel (not editable) in a fresh virtualenv: conf/ ships inside."""
import site
import subprocess
import sys
import venv

import pytest

from conftest import REPO, lhopt_env


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_virtualenv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist)], check=True, timeout=300)
    wheel = next(dist.glob("lhopt_cli-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # the dependencies (torch and the rest) come from this environment, the package from the wheel
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with open(f"{purelib}/_lhopt_test_deps.pth", "w") as pth:
        pth.write("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=300)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    lhopt = str(env_dir / "bin" / "lhopt")

    def run(*args):
        return subprocess.run(args, capture_output=True, text=True, cwd=workdir, env=lhopt_env(), timeout=300)

    where = run(str(python), "-c", "import lhopt_cli, pathlib; print(pathlib.Path(lhopt_cli.__file__).resolve())")
    assert where.stdout.strip().startswith(str(env_dir.resolve())), where.stdout + where.stderr
    bundled = run(str(python), "-c", "import lhopt_cli; c = lhopt_cli.Controller.from_pretrained(); print(len(c.meta['feature_names']))")
    assert bundled.returncode == 0 and int(bundled.stdout) > 50, bundled.stderr
    helped = run(lhopt, "--help")
    assert helped.returncode == 0 and "baseline-grid" in helped.stdout
    composed = run(lhopt, "baseline-grid", "--cfg")
    assert composed.returncode == 0, composed.stderr
    assert "name: mlp_mnist" in composed.stdout and "cosine_to_0.1" in composed.stdout
    grid = run(lhopt, "baseline-grid", "debug=smoke", "grid.lrs=[1e-3]", "grid.schedules=[constant]",
               "executor.workers=1", "run_dir=out")
    assert grid.returncode == 0, grid.stderr
    assert (workdir / "out" / "runs.parquet").exists()
