"""LoRA distillation on real Ray Train + DeepSpeed ZeRO-2 (CPU) with the packaged SmolLM2 model.

One 2-worker run (module fixture) serves most assertions: trained on both ranks, loss down, checkpoints
through Ray Train, adapter and merged model saved in Hugging Face format and loadable. A 1-worker run with
twice the accumulation checks that the loss curve depends only on the global batch.
"""

from __future__ import annotations

import json

import pytest
from training_data import commit_shards, last_letter_rows

from s2d.engine.core.spec import parse_spec
from s2d.training.trainer import train_model

pytestmark = pytest.mark.integration


# 16 examples, micro batch 2, global batch 8: 2 optimizer steps per epoch, 4 in all. Dropout off: its masks are
# drawn per rank, so they could not match between a 1-worker and a 2-worker split of the same batch.
TRAIN = {"deepspeed": "zero2", "micro_batch_size": 2, "epochs": 2, "seed": 3, "lora": {"dropout": 0.0}}


@pytest.fixture(scope="module")
def zero2_run(ray_session, packaged_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("zero2")
    commit_shards(out, last_letter_rows(16))
    train = TRAIN | {"num_workers": 2, "gradient_accumulation_steps": 2, "checkpoint_every_steps": 2, "merge": True}
    return out, train_model(parse_spec({"model": "smollm2-135m", "out": str(out), "train": train}))


def test_one_worker_accumulating_4_gives_the_loss_curve_of_two_workers_accumulating_2(zero2_run, tmp_path):
    _, two_workers = zero2_run
    commit_shards(tmp_path, last_letter_rows(16))
    train = TRAIN | {"num_workers": 1, "gradient_accumulation_steps": 4, "checkpoint_every_steps": 0}
    one_worker = train_model(parse_spec({"model": "smollm2-135m", "out": str(tmp_path), "train": train}))
    assert one_worker["global_batch"] == two_workers["global_batch"] == 8
    assert one_worker["losses"] == pytest.approx(two_workers["losses"], rel=1e-4, abs=1e-5)


def test_both_ranks_train_in_lockstep_and_the_loss_falls(zero2_run):
    out, metrics = zero2_run
    assert metrics["steps"] == 4 and len(metrics["losses"]) == 4
    assert [entry["step"] for entry in metrics["step_log"]] == [1, 2, 3, 4]
    assert metrics["global_batch"] == 8
    assert metrics["ranks"] == [{"rank": 0, "steps": 4}, {"rank": 1, "steps": 4}]
    assert metrics["losses"][-1] < metrics["losses"][0], metrics["losses"]
    assert metrics["resumed_from_step"] is None
    assert json.loads((out / "model" / "train_metrics.json").read_text())["losses"] == metrics["losses"]


def test_checkpoints_go_through_ray_train_under_out(zero2_run):
    out, _ = zero2_run
    run_dir = out / "train_ray" / "distill"
    checkpoints = sorted(run_dir.glob("checkpoint_*"))
    assert checkpoints, list(run_dir.iterdir())
    # Some checkpoint holds the step-2 DeepSpeed state with every rank's optimizer shard (num_to_keep=2 keeps it).
    states = [
        path
        for path in checkpoints
        if (path / "progress.json").is_file() and json.loads((path / "progress.json").read_text()).get("step") == 2
    ]
    assert states, checkpoints
    shards = sorted(p.name for p in (states[0] / "deepspeed").glob("*optim_states.pt"))
    assert len(shards) == 2, shards


def test_adapter_and_merged_model_load_and_agree(zero2_run, packaged_model_dir):
    out, metrics = zero2_run
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = out / "model"
    assert (model_dir / "adapter_config.json").is_file() and (model_dir / "adapter_model.safetensors").is_file()
    assert metrics["merged_dir"] == str(model_dir / "merged")
    base = AutoModelForCausalLM.from_pretrained(packaged_model_dir, dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, str(model_dir)).eval()
    lora_b = [param for name, param in tuned.named_parameters() if "lora_B" in name]
    assert lora_b and any(param.abs().sum() > 0 for param in lora_b)  # PEFT starts lora_B at zero; training moved it

    merged = AutoModelForCausalLM.from_pretrained(str(model_dir / "merged"), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir / "merged"))
    ids = tokenizer('Take the last letter of each word in "sun moon".', return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(tuned(ids).logits, merged(ids).logits, atol=1e-3)


def test_empty_committed_shards_are_a_clear_error(tmp_path):
    commit_shards(tmp_path, [])
    spec = parse_spec({"model": "smollm2-135m", "out": str(tmp_path)})
    with pytest.raises(ValueError, match="no accepted examples .*run `s2d generate` first"):
        train_model(spec)
