"""A PEFT-saved adapter served by vLLM (CPU, LoRA enabled, float32) answers greedily as transformers + PEFT does.

The adapter is PEFT's own format with nonzero random lora_B weights (a trained adapter has the same files; PEFT
starts lora_B at zero, which would make the adapter a no-op), so the test needs no training run.
"""

from __future__ import annotations

import pytest

from s2d.engine.core.program import SamplingRequest
from s2d.engine.core.spec import parse_spec

# 85 s on the shared 2-core machine (a vLLM engine with LoRA, transformers generation): the slow tier.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMPTS = [
    'Take the last letter of each word in "apple river stone" and concatenate them.',
    "What is the capital of France?",
    "A coin is heads up. Alice flips it. Is it still heads up?",
    "Name three colours.",
]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def random_adapter(packaged_model_dir, tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(packaged_model_dir, dtype=torch.float32)
    model = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    path = tmp_path_factory.mktemp("adapter") / "adapter"
    model.save_pretrained(str(path))
    return str(path)


def transformers_answers(model_dir: str, adapter: str) -> tuple[list[str], list[str]]:
    """Greedy answers of transformers + PEFT: (with the adapter, with it disabled, i.e. the base model)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter)
    model.eval()

    def answer(prompt: str) -> str:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.no_grad():
            output = model.generate(
                ids, do_sample=False, max_new_tokens=MAX_TOKENS, pad_token_id=tokenizer.eos_token_id
            )
        return tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)

    with_adapter = [answer(prompt) for prompt in PROMPTS]
    with model.disable_adapter():
        base = [answer(prompt) for prompt in PROMPTS]
    return with_adapter, base


def test_vllm_with_lora_matches_transformers_with_peft(ray_session, packaged_model_dir, random_adapter, tmp_path):
    from s2d.actors.replica import GenerationReplica

    spec = parse_spec({"model": "smollm2-135m", "out": str(tmp_path), "engine": {"dtype": "float32"}})
    replica = (
        ray_session.remote(GenerationReplica)
        .options(num_cpus=1)
        .remote(**GenerationReplica.for_job(spec, max_lora_rank=8))
    )
    contexts = [{"question": prompt, "system1_prompt": prompt} for prompt in PROMPTS]
    greedy = SamplingRequest(n=1, temperature=0.0, max_tokens=MAX_TOKENS)
    try:
        with_lora = ray_session.get(replica.run.remote("system1", contexts, greedy, random_adapter))
        without = ray_session.get(replica.run.remote("system1", contexts, greedy))
    finally:
        ray_session.kill(replica)
    vllm_lora = [chains[0].final_text for chains in with_lora]
    vllm_base = [chains[0].final_text for chains in without]

    assert vllm_lora != vllm_base, "the adapter changed nothing; the comparison would prove nothing"
    peft_lora, peft_base = transformers_answers(packaged_model_dir, random_adapter)
    assert vllm_lora == peft_lora  # every prompt, all 24 greedy tokens (float32 on both sides)
    assert vllm_base == peft_base
