"""A tiny student model built in the test from a config, with a tokenizer of its own (nothing is downloaded).

The tokenizer is a byte-level BPE trained in-process on a few sentences (a few hundred tokens, against the
packaged teacher's 49,152), with its own special tokens and chat template; the model a 2-layer Llama whose head
size vLLM's CPU attention supports. transformers, PEFT and vLLM load the folder as any Hugging Face model.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
VOCAB_SIZE = 384


def _corpus() -> list[str]:
    from training_data import last_letter_rows

    rows = last_letter_rows(16)
    lines = [row["prompt"] + " " + row["answer"] for row in rows]
    lines += [
        "What is the last letter of the word? Answer: e",
        "Take the last letter of each word and concatenate them. The answer is a word of letters.",
        "A coin is heads up. Alice flips it. Is it still heads up? yes no",
    ]
    return lines * 4


def build_tiny_student(folder: Path) -> Path:
    """Write the tiny student (config, random weights, tokenizer with its chat template) to `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<|pad|>", eos_token="<|end|>", model_max_length=1024
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head size 32: one vLLM's CPU attention supports
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
