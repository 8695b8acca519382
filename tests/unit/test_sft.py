"""SFT example building: chat-formatted prompt masked out, answer + EOS learned, left truncation of the prompt."""

from __future__ import annotations

import pytest

from s2d.training.sft import IGNORE_INDEX, build_examples, collate, pack


class FakeTokenizer:
    """One id per character; the chat template wraps the user turn in fixed marker ids."""

    eos_token_id = 2
    USER, ASSISTANT = 10, 11

    def __init__(self, returns: str = "list"):
        self.returns = returns  # "list" (transformers 4) or "dict" (transformers 5 BatchEncoding)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert add_special_tokens is False, "the answer must not get a BOS token in the middle of the sequence"
        return [100 + ord(char) % 100 for char in text]

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        assert add_generation_prompt and tokenize
        (message,) = messages
        ids = [self.USER] + self.encode(message["content"], add_special_tokens=False) + [self.ASSISTANT]
        return {"input_ids": ids, "attention_mask": [1] * len(ids)} if self.returns == "dict" else ids


@pytest.mark.parametrize("returns", ["list", "dict"])
def test_prompt_is_masked_and_answer_ends_with_eos(returns):
    tokenizer = FakeTokenizer(returns)
    (example,) = build_examples([{"prompt": "abc", "answer": "xy"}], tokenizer, max_seq_len=64)
    prompt = [FakeTokenizer.USER, *tokenizer.encode("abc", add_special_tokens=False), FakeTokenizer.ASSISTANT]
    answer = tokenizer.encode("xy", add_special_tokens=False) + [tokenizer.eos_token_id]
    assert example["input_ids"] == prompt + answer
    assert example["labels"] == [IGNORE_INDEX] * len(prompt) + answer


def test_over_long_example_drops_prompt_tokens_from_the_left():
    tokenizer = FakeTokenizer()
    (example,) = build_examples([{"prompt": "abcdefgh", "answer": "xyz"}], tokenizer, max_seq_len=7)
    answer = tokenizer.encode("xyz", add_special_tokens=False) + [tokenizer.eos_token_id]
    assert len(example["input_ids"]) == 7
    assert example["input_ids"][-4:] == answer  # the whole answer survives
    assert example["input_ids"][:3] == tokenizer.encode("gh", add_special_tokens=False) + [FakeTokenizer.ASSISTANT]
    assert example["labels"] == [IGNORE_INDEX] * 3 + answer


def test_answer_that_cannot_fit_is_skipped():
    rows = [{"prompt": "q", "answer": "far too long"}, {"prompt": "q", "answer": "ok"}]
    tokenizer = FakeTokenizer()
    examples = build_examples(rows, tokenizer, max_seq_len=6)
    assert [example["labels"][-3:] for example in examples] == [tokenizer.encode("ok", add_special_tokens=False) + [2]]


def test_collate_right_pads_with_masked_labels():
    batch = [
        {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]},
        {"input_ids": [8], "labels": [8]},
    ]
    tensors = collate(batch, pad_token_id=0)
    assert tensors["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert tensors["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert tensors["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert tensors["input_ids"].dtype == tensors["labels"].dtype == tensors["attention_mask"].dtype


def test_packed_sequences_restart_positions_and_pad_as_a_sequence_of_their_own():
    first = {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]}
    second = {"input_ids": [8, 9], "labels": [IGNORE_INDEX, 9]}
    packed = pack([first, second])
    assert packed == {
        "input_ids": [5, 6, 7, 8, 9],
        "labels": [IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9],
        "position_ids": [0, 1, 2, 0, 1],
    }
    tensors = collate([packed, first], pad_token_id=0)
    assert "attention_mask" not in tensors  # transformers derives the per-example mask from position_ids
    assert tensors["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 0, 1]]
    assert tensors["labels"].tolist()[1] == [IGNORE_INDEX, 6, 7, IGNORE_INDEX, IGNORE_INDEX]


def test_tokenizer_without_eos_is_refused():
    tokenizer = FakeTokenizer()
    tokenizer.eos_token_id = None
    with pytest.raises(ValueError, match="eos_token_id"):
        build_examples([{"prompt": "q", "answer": "a"}], tokenizer, max_seq_len=16)


# --- DeepSpeed configs: the JSON files under training/configs/, completed from the spec -----------------------------

import json  # noqa: E402

from s2d.engine.core.spec import TrainSpec  # noqa: E402
from s2d.training.configs import CONFIG_DIR, available_configs, load_deepspeed_config, zero_stage  # noqa: E402


def test_named_config_is_filled_from_the_spec():
    train = TrainSpec(micro_batch_size=3, gradient_accumulation_steps=2, learning_rate=2e-4)
    config = load_deepspeed_config("zero2", train, use_gpu=False)
    assert zero_stage(config) == 2
    assert config["train_micro_batch_size_per_gpu"] == 3 and config["gradient_accumulation_steps"] == 2
    assert config["optimizer"]["params"]["lr"] == 2e-4
    assert "scheduler" not in config  # the schedule is s2d.training.plan.lr_factor's
    assert config["bf16"]["enabled"] is False  # CPU trains in fp32
    assert not any(key.startswith("_") for key in config)


def test_default_learning_rate_depends_on_the_mode():
    assert TrainSpec().peak_learning_rate == 1e-3
    assert TrainSpec(mode="full").peak_learning_rate == 1e-5
    assert TrainSpec(mode="full", learning_rate=3e-5).peak_learning_rate == 3e-5


def test_every_shipped_config_is_valid_and_has_its_stage():
    assert {"zero2", "zero3", "zero3_offload"} <= set(available_configs())
    stages = {name: zero_stage(load_deepspeed_config(name, TrainSpec(), use_gpu=False)) for name in available_configs()}
    assert stages["zero2"] == 2 and stages["zero3"] == 3 and stages["zero3_offload"] == 3


def test_offload_config_uses_cpu_adam_on_gpus_and_torch_adamw_on_cpu_workers(monkeypatch):
    raw = json.loads((CONFIG_DIR / "zero3_offload.json").read_text())
    assert raw["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert raw["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert "torch_adam" not in raw["optimizer"]["params"]  # DeepSpeed's CPU Adam on GPU clusters
    cpu = load_deepspeed_config("zero3_offload", TrainSpec(), use_gpu=False)
    assert cpu["optimizer"]["params"]["torch_adam"] is True and cpu["zero_force_ds_cpu_optimizer"] is False
    assert cpu["zero_optimization"]["offload_param"]["pin_memory"] is False
    monkeypatch.setattr("s2d.training.configs._gpu_supports_bf16", lambda: True)
    gpu = load_deepspeed_config("zero3_offload", TrainSpec(), use_gpu=True)
    assert "torch_adam" not in gpu["optimizer"]["params"] and gpu["bf16"]["enabled"] is True
    assert gpu["zero_optimization"]["offload_optimizer"]["pin_memory"] is True


def test_unknown_config_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown deepspeed config 'zero9'.*zero2"):
        load_deepspeed_config("zero9", TrainSpec(), use_gpu=False)


def test_config_path_is_read(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text('{"zero_optimization": {"stage": 3}, "optimizer": {"type": "AdamW", "params": {}}}')
    config = load_deepspeed_config(str(path), TrainSpec(micro_batch_size=1), use_gpu=False)
    assert zero_stage(config) == 3 and config["train_micro_batch_size_per_gpu"] == 1


def test_config_with_its_own_scheduler_is_refused(tmp_path):
    path = tmp_path / "sched.json"
    path.write_text('{"scheduler": {"type": "WarmupLR", "params": {}}}')
    with pytest.raises(ValueError, match="train.lr_schedule"):
        load_deepspeed_config(str(path), TrainSpec(), use_gpu=False)


@pytest.mark.parametrize("text, message", [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object")])
def test_broken_config_file_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_deepspeed_config(str(path), TrainSpec(), use_gpu=False)
