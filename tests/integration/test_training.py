"""LoRA distillation on real Ray Train + DeepSpeed ZeRO-2 (CPU) with the packaged SmolLM2 model."""

from __future__ import annotations

import json

import pytest

from engine.spec import parse_spec
from training.trainer import train_adapter

pytestmark = pytest.mark.integration

WORDS = [
    ("apple", "river", "stone", "cloud"),
    ("green", "table", "music", "horse"),
    ("paper", "light", "ocean", "chair"),
    ("tiger", "bread", "glass", "mouse"),
    ("plant", "sugar", "night", "dream"),
    ("storm", "lemon", "piano", "field"),
    ("candy", "water", "brick", "smile"),
    ("queen", "metal", "frost", "honey"),
]


def write_shards(directory, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    half = len(rows) // 2  # two shard files, as the pipeline writes them
    for index, part in enumerate((rows[:half], rows[half:])):
        pq.write_table(pa.Table.from_pylist(part), directory / f"shard-{index:05d}.parquet")


def last_letter_rows():
    return [
        {
            "prompt": f"Take the last letter of each word in \"{' '.join(words)}\" and concatenate them.",
            "answer": "".join(word[-1] for word in words),
        }
        for words in WORDS
    ]


def test_train_adapter_trains_on_both_ranks_and_saves_a_loadable_adapter(ray_session, packaged_model_dir, tmp_path):
    shards = tmp_path / "shards"
    write_shards(shards, last_letter_rows())
    # lr 1e-3 (the default, spelled out) so 4 optimizer steps move the loss clearly, not within batch noise.
    train = {"epochs": 2, "micro_batch_size": 2, "learning_rate": 1e-3}
    spec = parse_spec({"model": "smollm2-135m", "out": str(tmp_path), "train": train})
    model_out = tmp_path / "model"

    metrics = train_adapter(spec, shards, model_out)

    assert (model_out / "adapter_config.json").is_file()
    assert (model_out / "adapter_model.safetensors").is_file()
    # 8 examples over 2 ranks x micro batch 2 = 2 optimizer steps per epoch, on each rank.
    assert metrics["steps"] == 4 and len(metrics["losses"]) == 4
    assert metrics["ranks"] == [{"rank": 0, "steps": 4}, {"rank": 1, "steps": 4}]
    assert metrics["losses"][-1] < metrics["losses"][0], metrics["losses"]
    assert json.loads((model_out / "train_metrics.json").read_text())["losses"] == metrics["losses"]
    assert (tmp_path / "train_ray" / "distill").is_dir()  # Ray Train's files stay under the job's out dir

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(packaged_model_dir, dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, str(model_out))
    lora_b = [param for name, param in tuned.named_parameters() if "lora_B" in name]
    assert lora_b and any(param.abs().sum() > 0 for param in lora_b)  # PEFT starts lora_B at zero; training moved it


def test_empty_shards_dir_is_a_clear_error(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    spec = parse_spec({"model": "smollm2-135m", "out": str(tmp_path)})
    with pytest.raises(ValueError, match="no accepted examples .*lower curate.threshold or raise task.num_inputs"):
        train_adapter(spec, shards, tmp_path / "model")
