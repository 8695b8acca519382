from pathlib import Path

import pytest

from s2d.cluster.submit import (
    SubmitError,
    build_submission,
    dashboard_address,
    is_local_address,
    job_environment,
    stage_job_dir,
    stage_package,
)
from s2d.engine.cli import build_parser
from s2d.engine.core.spec import load_spec, parse_spec

SECRET = "tok-3f9a-secret"


def test_submission_ships_code_and_the_resolved_job_file_only(tmp_path):
    spec = parse_spec({"model": "smollm2-135m", "out": str(tmp_path / "run")}, ["sampling.n=2"])
    working_dir, package = stage_job_dir(spec), stage_package()
    try:
        assert [p.name for p in Path(working_dir).iterdir()] == ["job.yaml"]
        # the one import package, whole: its layers are folders of their own in a checkout
        assert Path(package).name == "s2d" and (Path(package) / "engine" / "core" / "spec.py").is_file()
        assert (Path(package) / "engine" / "core" / "prompts" / "cot_fewshot.yaml").is_file()
        assert not list(Path(package).rglob("__pycache__"))
        assert load_spec(Path(working_dir) / "job.yaml") == spec  # overrides applied, nothing else needed
        submission = build_submission(
            spec,
            "generate",
            working_dir,
            python="/opt/py/bin/python",
            package=package,
            environ={"S2D_CACHE": "/shared/cache", "HOME": "/root"},
        )
    finally:
        import shutil

        shutil.rmtree(working_dir)
        shutil.rmtree(Path(package).parent)
    assert submission.entrypoint == "/opt/py/bin/python -m s2d.engine.cli generate job.yaml --no-progress"
    env = submission.runtime_env
    assert env["working_dir"] == working_dir
    assert env["py_modules"] == [package]
    assert {".venv", ".cache", "runs", ".git", "__pycache__"} <= set(env["excludes"])
    assert env["env_vars"]["S2D_CACHE"] == "/shared/cache" and "HOME" not in env["env_vars"]
    assert submission.metadata["s2d_stage"] == "generate"


def test_the_auth_token_never_enters_the_submission(tmp_path):
    spec = parse_spec({"model": "m", "out": str(tmp_path)})
    environ = {
        "RAY_AUTH_TOKEN": SECRET,
        "RAY_AUTH_TOKEN_PATH": "/secret/path",
        "RAY_AUTH_MODE": "token",
        "S2D_CACHE": "/c",
    }
    submission = build_submission(spec, "run", str(tmp_path), "python", environ, package="/tmp/s2d")
    assert SECRET not in repr(submission) and "/secret/path" not in repr(submission)
    assert not any(key.startswith("RAY_AUTH") for key in job_environment(environ))


def test_relative_out_is_refused_with_a_fix():
    spec = parse_spec({"model": "m", "out": "runs/demo"})
    with pytest.raises(SubmitError, match="absolute path"):
        build_submission(spec, "run", "/tmp", "python", {}, package="/tmp/s2d")


def test_address_resolution(monkeypatch):
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert dashboard_address() == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:8265")
    assert dashboard_address() == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://ray.example.org")
    assert dashboard_address() == "https://ray.example.org"
    assert dashboard_address("http://head:8265") == "http://head:8265"
    assert is_local_address("127.0.0.1:8265") and is_local_address("http://localhost:1")
    assert not is_local_address("http://head:8265")


def test_cli_subcommands_parse():
    parser = build_parser()
    args = parser.parse_args(["submit", "job.yaml", "a=1", "--no-wait", "--stage", "generate", "--address", "h:1"])
    assert (args.job, args.overrides, args.no_wait, args.stage, args.address) == (
        "job.yaml",
        ["a=1"],
        True,
        "generate",
        "h:1",
    )
    assert parser.parse_args(["logs", "raysubmit_1", "--follow"]).follow
    assert parser.parse_args(["stop", "raysubmit_1"]).submission_id == "raysubmit_1"


def test_submit_with_a_bad_job_file_exits_2_before_contacting_a_cluster(tmp_path, capsys):
    from s2d.engine.cli import main

    bad = tmp_path / "job.yaml"
    bad.write_text("model: m\nsampling: {n: 0}\n")
    assert main(["submit", str(bad), "--address", "http://127.0.0.1:9"]) == 2
    assert "sampling.n" in capsys.readouterr().err


def test_a_submitted_stage_gets_force_and_allow_partial_only_where_it_takes_them(tmp_path, capsys):
    spec = parse_spec({"model": "m", "out": str(tmp_path)})
    submission = build_submission(spec, "train", "/tmp", "python", {}, package="/tmp/s2d", flags=("--allow-partial",))
    assert submission.entrypoint == "python -m s2d.engine.cli train job.yaml --no-progress --allow-partial"
    from s2d.engine.cli import main

    job = tmp_path / "job.yaml"
    job.write_text(f"model: m\nout: {tmp_path / 'run'}\n")
    # refused before anything reaches a cluster: no cluster at this address is ever asked
    assert main(["submit", str(job), "--stage", "train", "--force", "--address", "http://127.0.0.1:9"]) == 2
    assert "--force applies to --stage run or generate, not train" in capsys.readouterr().err
