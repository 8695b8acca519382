"""Packed sequences on the real model: every example sees only itself, exactly as when it runs alone."""

from __future__ import annotations

import pytest
from training_data import last_letter_rows

from s2d.training.sft import build_examples, collate, pack

pytestmark = pytest.mark.integration


def test_packed_examples_get_the_logits_they_get_alone(packaged_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir)
    model = AutoModelForCausalLM.from_pretrained(packaged_model_dir, dtype=torch.float32).eval()
    examples = build_examples(last_letter_rows(3), tokenizer, max_seq_len=256)
    with torch.no_grad():
        alone = [model(**collate([example], tokenizer.eos_token_id), use_cache=False).logits[0] for example in examples]
        batch = collate([pack(examples), examples[0]], tokenizer.eos_token_id)  # padding in the second row
        # As the trainer calls it: with a KV cache transformers would not look for packed sequences.
        packed = model(**batch, use_cache=False).logits[0]
    offset = 0
    for example, logits in zip(examples, alone):
        span = len(example["input_ids"])
        assert torch.allclose(packed[offset : offset + span], logits, atol=1e-3), f"example at {offset} leaked"
        offset += span
