"""The package's shape: one import name (`s2d`) in the built wheel, which installs and runs on its own; the layer
contracts and the no-cycle check of `make lint` (scripts/lint_layers.py) pass here and fail on a deliberate
violation."""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = REPO / "scripts" / "lint_layers.py"


def _lint(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LINT), "--repo", str(repo)], capture_output=True, text=True)


def _copy_of_repo(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    for name in ("s2d", "engine", "actors", "training", "cluster"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, copy / name)
    return copy


def test_layers_hold_on_this_checkout():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "module, line, broken",
    [
        ("engine/core/votes.py", "from s2d.engine.data import shards", "layers"),  # core reaching up to data
        ("engine/core/answers.py", "import ray", "core is pure"),  # core importing Ray
        ("engine/data/storage.py", "from s2d.engine.stages import api", "layers"),  # a function-level import too
    ],
)
def test_a_layer_violation_fails_the_lint(tmp_path, module, line, broken):
    repo = _copy_of_repo(tmp_path)
    path = repo / module
    path.write_text(path.read_text() + f"\n\ndef _violation():\n    {line}\n")
    result = _lint(repo)
    assert result.returncode == 1
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout


def test_an_import_cycle_fails_the_lint(tmp_path):
    repo = _copy_of_repo(tmp_path)
    path = repo / "engine" / "core" / "answers.py"  # methods imports answers; answers now imports methods back
    path.write_text(path.read_text() + "\n\ndef _cycle():\n    from s2d.engine.core import methods  # noqa\n")
    result = _lint(repo)
    assert result.returncode == 1
    assert "import cycle: s2d.engine.core.answers <-> s2d.engine.core.methods" in result.stdout, result.stdout


def test_the_wheel_installs_one_package_that_runs_on_its_own(tmp_path):
    """Build the wheel, list it, pip-install it (without dependencies) into a fresh venv that sees this environment's
    packages for s2d's dependencies (a plain path: not the editable install of s2d), and run it from elsewhere."""
    source = _copy_of_repo(tmp_path)  # setuptools writes build/ beside the sources: not into this checkout
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("s2d-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"s2d"}
    assert "s2d/engine/core/prompts/cot_fewshot.yaml" in names and "s2d/training/configs/zero2.json" in names

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = Path(
        subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        .decode()
        .strip()
    )
    # Dependencies from this environment, added as a plain path: its .pth files (the editable finder) are not run.
    (purelib / "s2d-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # only what the venv has
    run = dict(cwd=tmp_path, env=env, capture_output=True, text=True)
    imported = subprocess.run([str(python), "-c", "import s2d; print(s2d.__file__, s2d.run_job)"], **run)
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.startswith(str(purelib / "s2d" / "__init__.py")) and "run_job" in imported.stdout
    usage = subprocess.run([str(env_dir / "bin" / "s2d"), "--help"], **run)  # the console script
    assert usage.returncode == 0 and "System 2 distillation" in usage.stdout, usage.stderr[-2000:]
