"""SFT example building: chat-formatted prompt masked out, answer + EOS learned, left truncation of the prompt."""

from __future__ import annotations

import pytest

from training.sft import IGNORE_INDEX, build_examples, collate


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


def test_tokenizer_without_eos_is_refused():
    tokenizer = FakeTokenizer()
    tokenizer.eos_token_id = None
    with pytest.raises(ValueError, match="eos_token_id"):
        build_examples([{"prompt": "q", "answer": "a"}], tokenizer, max_seq_len=16)


# --- DeepSpeed config and per-rank sharding: the other pure pieces of training/ -------------------------------------

from engine.spec import TrainSpec  # noqa: E402
from training.configs import available_configs, load_deepspeed_config  # noqa: E402
from training.trainer import epoch_indices, examples_per_rank  # noqa: E402


def test_named_config_is_filled_from_the_spec():
    train = TrainSpec(micro_batch_size=3, gradient_accumulation_steps=2, learning_rate=1e-3)
    config = load_deepspeed_config("zero2", train, use_gpu=False, total_steps=100)
    assert config["zero_optimization"]["stage"] == 2
    assert config["train_micro_batch_size_per_gpu"] == 3 and config["gradient_accumulation_steps"] == 2
    assert config["optimizer"]["params"]["lr"] == 1e-3
    assert config["scheduler"]["params"] == {
        "warmup_min_lr": 0.0, "warmup_max_lr": 1e-3, "warmup_num_steps": 10, "warmup_type": "linear",
    }
    assert config["bf16"]["enabled"] is False  # CPU trains in fp32
    assert not any(key.startswith("_") for key in config)


def test_short_run_gets_a_constant_learning_rate():
    params = load_deepspeed_config("zero2", TrainSpec(), use_gpu=False, total_steps=4)["scheduler"]["params"]
    assert params["warmup_min_lr"] == params["warmup_max_lr"]


def test_unknown_config_name_lists_the_available_ones():
    assert "zero2" in available_configs()
    with pytest.raises(ValueError, match=r"unknown deepspeed config 'zero9'.*zero2"):
        load_deepspeed_config("zero9", TrainSpec(), use_gpu=False)


def test_config_path_is_read(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text('{"zero_optimization": {"stage": 3}, "optimizer": {"type": "AdamW", "params": {}}}')
    config = load_deepspeed_config(str(path), TrainSpec(micro_batch_size=1), use_gpu=False)
    assert config["zero_optimization"]["stage"] == 3 and config["train_micro_batch_size_per_gpu"] == 1


def test_ranks_get_equal_disjoint_shards_padded_by_wrapping():
    per_rank = examples_per_rank(num_examples=7, world_size=2, micro_batch_size=2, accumulation=1)
    assert per_rank == 4  # ceil(7 / 2) = 4 examples, already whole micro batches
    shards = [epoch_indices(7, rank, 2, per_rank, seed=0) for rank in (0, 1)]
    assert all(len(shard) == per_rank for shard in shards)
    assert set(shards[0][:4]) | set(shards[1][:3]) == set(range(7))  # every example once before wrapping
    assert not set(shards[0][:4]) & set(shards[1][:3])
    assert shards == [epoch_indices(7, rank, 2, per_rank, seed=0) for rank in (0, 1)]  # deterministic
    assert shards != [epoch_indices(7, rank, 2, per_rank, seed=1) for rank in (0, 1)]  # reshuffled per epoch


def test_more_ranks_than_examples_still_fill_every_rank():
    assert [epoch_indices(1, rank, 3, 2, seed=0) for rank in range(3)] == [[0, 0]] * 3
