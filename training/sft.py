"""Supervised fine-tuning examples: the user prompt in the chat template of the model trained (the student's own,
whatever the teacher's), the loss only on the answer.

System 2 distillation trains the model to give the final answer directly, so the target is the bare answer
(no reasoning) followed by EOS, and the prompt tokens are masked out of the loss with -100.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

IGNORE_INDEX = -100  # the label value torch's cross-entropy skips


def chat_messages(prompt: str, answer: str | None = None) -> list[dict[str, str]]:
    """A training pair as chat turns: the prompt as the one user turn, then (when given) the answer as the
    assistant's. `prompt_ids` formats the user turn through the chat template; `s2d export` writes both."""
    turns = [{"role": "user", "content": prompt}]
    return turns + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of the chat-formatted user turn, ending where the assistant's answer starts."""
    encoded = tokenizer.apply_chat_template(chat_messages(prompt), add_generation_prompt=True, tokenize=True)
    # transformers 5 returns a BatchEncoding (a Mapping) here; older versions return the id list itself.
    if isinstance(encoded, Mapping):
        encoded = encoded["input_ids"]
    ids = list(encoded)
    if ids and isinstance(ids[0], (list, tuple)):  # a batch of one conversation
        ids = list(ids[0])
    return [int(token) for token in ids]


def build_examples(rows: list[dict], tokenizer: Any, max_seq_len: int) -> list[dict]:
    """Turn rows with `prompt` and `answer` into {"input_ids", "labels"} for causal-LM training.

    An over-long example loses prompt tokens from the left, so the answer (the thing being learned) is kept.
    An answer that alone does not fit next to one prompt token cannot teach anything and is skipped.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token_id; the model would never learn to stop")
    examples = []
    for row in rows:
        prompt = prompt_ids(tokenizer, row["prompt"])
        answer = list(tokenizer.encode(row["answer"], add_special_tokens=False)) + [tokenizer.eos_token_id]
        room_for_prompt = max_seq_len - len(answer)
        if room_for_prompt < 1:
            continue
        prompt = prompt[-room_for_prompt:]
        examples.append({"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer})
    return examples


def pack(examples: list[dict]) -> dict:
    """Several examples as one sequence. position_ids restart at 0 for each one: transformers reads that (with no
    attention_mask and use_cache=False) as packed sequences and keeps attention inside each example. The first
    token of an example is a prompt token (label -100), so no loss crosses from one example into the next."""
    return {
        "input_ids": [token for example in examples for token in example["input_ids"]],
        "labels": [label for example in examples for label in example["labels"]],
        "position_ids": [position for example in examples for position in range(len(example["input_ids"]))],
    }


def collate(batch: list[dict], pad_token_id: int) -> dict:
    """Right-pad examples into input_ids and labels (padding = -100) tensors, plus attention_mask, or, for
    packed sequences, position_ids (the padding is one more sequence that nothing attends to or learns from)."""
    import torch

    width = max(len(example["input_ids"]) for example in batch)
    packed = any("position_ids" in example for example in batch)
    input_ids, labels, extra = [], [], []
    for example in batch:
        padding = width - len(example["input_ids"])
        input_ids.append(example["input_ids"] + [pad_token_id] * padding)
        labels.append(example["labels"] + [IGNORE_INDEX] * padding)
        if packed:
            positions = example.get("position_ids") or list(range(len(example["input_ids"])))
            extra.append(positions + list(range(padding)))
        else:
            extra.append([1] * len(example["input_ids"]) + [0] * padding)
    tensors = {
        "input_ids": torch.tensor(input_ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
    }
    tensors["position_ids" if packed else "attention_mask"] = torch.tensor(extra, dtype=torch.long)
    return tensors
