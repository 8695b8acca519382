"""ZeRO-3 (weights sharded) with optimizer and parameter offload, LoRA and full fine-tune, 2 Ray Train workers on CPU.

The LoRA run also trains on packed sequences (train.batching=packed), which no other Ray Train test covers.
"""

from __future__ import annotations

import pytest
from training_data import commit_shards, last_letter_rows

from s2d.engine.core.spec import parse_spec
from s2d.training.trainer import train_model

# Each run takes 85-105 s on the shared 2-core machine (engine start-up, ZeRO-3 gathers): the slow tier.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _train(out, **train):
    commit_shards(out, last_letter_rows())
    base = {"num_workers": 2, "micro_batch_size": 2, "epochs": 2, "checkpoint_every_steps": 2}
    return train_model(parse_spec({"model": "smollm2-135m", "out": str(out), "train": base | train}))


def test_zero3_offload_lora_trains_resumable_state_and_saves_the_gathered_adapter(
    ray_session, packaged_model_dir, tmp_path
):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # ~50-token examples, at most 128 tokens per packed sequence: 2 examples each, 4 sequences, 1 per micro batch.
    metrics = _train(tmp_path, deepspeed="zero3_offload", batching="packed", max_seq_len=128, micro_batch_size=1)
    assert metrics["micro_batches_per_epoch"] < 8  # packed: fewer sequences than the 8 examples
    steps = metrics["steps"]
    assert steps >= 2 and metrics["ranks"] == [{"rank": 0, "steps": steps}, {"rank": 1, "steps": steps}]
    assert metrics["losses"][-1] < metrics["losses"][0], metrics["losses"]
    # The adapter was gathered from both ranks' shards: full-size, trained tensors, not ZeRO-3 placeholders.
    base = AutoModelForCausalLM.from_pretrained(packaged_model_dir, dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, str(tmp_path / "model"))
    lora_b = {name: param for name, param in tuned.named_parameters() if "lora_B" in name}
    assert lora_b and all(param.shape[0] > 0 for param in lora_b.values())
    assert any(param.abs().sum() > 0 for param in lora_b.values())


def test_zero3_full_fine_tune_saves_a_whole_model(ray_session, packaged_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    metrics = _train(tmp_path, deepspeed="zero3", mode="full", learning_rate=1e-4, checkpoint_every_steps=0)
    assert metrics["losses"][-1] < metrics["losses"][0], metrics["losses"]
    model_dir = tmp_path / "model"
    assert (model_dir / "config.json").is_file() and not (model_dir / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(str(model_dir))  # all weights present (a missing key would warn, not fail)
    import safetensors.torch

    weights = safetensors.torch.load_file(str(next(model_dir.glob("*.safetensors"))))
    assert all(tensor.numel() > 0 for tensor in weights.values())
