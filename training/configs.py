"""DeepSpeed configs: versioned JSON files under training/configs/, completed from the job's TrainSpec.

The spec owns every number a user tunes per job (batch sizes, learning rate); the JSON owns the
DeepSpeed mechanics (ZeRO stage, optimizer kind, clipping). Fields marked "auto" are filled in here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from s2d.engine.core.spec import TrainSpec

CONFIG_DIR = Path(__file__).parent / "configs"


def available_configs() -> list[str]:
    return sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


def load_deepspeed_config(name_or_path: str, train: TrainSpec, use_gpu: bool) -> dict[str, Any]:
    """Read a named (training/configs/<name>.json) or path config and fill it in from `train`.

    The learning-rate schedule is not DeepSpeed's: s2d.training.plan.lr_factor implements train.lr_schedule
    (DeepSpeed's warmup schedulers run their first step at lr 0), so a config that brings its own
    `scheduler` is refused rather than silently overridden.
    """
    config = _read(name_or_path)
    if "scheduler" in config:
        raise ValueError(
            f"deepspeed config {name_or_path!r} has a 'scheduler'; the schedule comes from train.lr_schedule "
            "and train.warmup_ratio, remove it from the file"
        )
    config["train_micro_batch_size_per_gpu"] = train.micro_batch_size
    config["gradient_accumulation_steps"] = train.gradient_accumulation_steps
    config.pop("train_batch_size", None)  # DeepSpeed derives it from the two above and the world size
    optimizer = config.setdefault("optimizer", {"type": "AdamW", "params": {}})
    optimizer.setdefault("params", {})["lr"] = train.peak_learning_rate
    zero = config.get("zero_optimization", {})
    if not use_gpu and zero.get("offload_optimizer", {}).get("device") == "cpu":
        # On CPU workers the "offload" moves nothing; torch's AdamW spares building DeepSpeed's CPU Adam op there.
        optimizer["params"]["torch_adam"] = True
        config["zero_force_ds_cpu_optimizer"] = False
    if not use_gpu:
        for offload in ("offload_optimizer", "offload_param"):
            if offload in zero:
                zero[offload]["pin_memory"] = False  # page-locked memory only helps host-to-GPU copies
    # bf16 only where the hardware has it: CPU matmuls in bf16 are slow here and LoRA is small anyway.
    config.setdefault("bf16", {})["enabled"] = bool(use_gpu and _gpu_supports_bf16())
    leftover = _auto_fields(config)
    if leftover:
        raise ValueError(f"deepspeed config {name_or_path!r}: no value for 'auto' fields {leftover}")
    return config


def zero_stage(config: dict[str, Any]) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def _read(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path).expanduser()
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise ValueError(f"deepspeed config file {str(path)!r} does not exist")
    else:
        path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ValueError(
                f"unknown deepspeed config {name_or_path!r}; choose one of {available_configs()} "
                "or give a path to a JSON file"
            )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"deepspeed config {str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"deepspeed config {str(path)!r} must be a JSON object")
    # Keys starting with "_" are comments for humans; DeepSpeed should not see them.
    return {key: value for key, value in copy.deepcopy(config).items() if not key.startswith("_")}


def _auto_fields(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [hit for key, value in node.items() for hit in _auto_fields(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if node == "auto" else []


def _gpu_supports_bf16() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - a GPU run always has torch
        return False
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
