"""One Ray Train worker of the distillation fine-tune: its rank's share of every optimizer step, its part of each
checkpoint, and the final export.

`s2d.training.trainer.train_model` (the driver) starts one per data-parallel rank with the committed rows and the
spec; each resolves the student itself, builds the same micro-batch plan (s2d.training.plan) and trains under
DeepSpeed, LoRA or full. A checkpoint is DeepSpeed's state under `DS_TAG` with `PROGRESS_FILE` (the step it holds
and the loss log so far); rank 0's final checkpoint is the Hugging Face model with `METRICS_FILE`, which the driver
swaps in as `<out>/model/`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from s2d.engine.core.spec import JobSpec

METRICS_FILE = "train_metrics.json"
PROGRESS_FILE = "progress.json"  # inside every checkpoint: the step it holds and the loss log so far
DS_TAG = "deepspeed"  # DeepSpeed's sub-folder inside a checkpoint
INSTALL_HINT = "pip install 'ray[data,train]' deepspeed peft transformers torch (or run `make venv`)"


def train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: this rank's share of every optimizer step, checkpoints, and the final export."""
    use_gpu: bool = config["use_gpu"]
    if not use_gpu:
        # DeepSpeed picks its accelerator once, at import; without this it looks for CUDA and fails on CPU nodes.
        os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        import deepspeed
        import ray.train
        import torch
        import torch.distributed as dist
        from tqdm import tqdm
        from transformers import AutoTokenizer
    except ImportError as error:  # pragma: no cover - depends on the worker's install
        raise ImportError(f"a training worker is missing a package ({error}); {INSTALL_HINT}") from error

    from s2d.engine.data.models import resolve_model
    from s2d.training.configs import load_deepspeed_config
    from s2d.training.plan import lr_factor, micro_batches, padded_to_steps, rank_micro_batches, warmup_steps
    from s2d.training.sft import build_examples, collate, pack

    _quiet_worker_logs()
    spec: JobSpec = config["spec"]
    train = spec.train
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    if use_gpu:
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())

    # The student's own weights, tokenizer and chat template: the pairs are text, so a student whose tokenizer
    # differs from the teacher's (train.model) learns them in its own format.
    model_path = resolve_model(spec.student)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    examples = build_examples(config["rows"], tokenizer, train.max_seq_len)
    if not examples:
        raise ValueError(f"every answer is longer than train.max_seq_len={train.max_seq_len} tokens; raise it")
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    lengths = [len(example["input_ids"]) for example in examples]
    accumulation = train.gradient_accumulation_steps
    per_step = accumulation * world_size

    def epoch_plan(epoch: int) -> list[list[int]]:
        batches = micro_batches(lengths, train.micro_batch_size, train.batching, train.seed + epoch, train.max_seq_len)
        return padded_to_steps(batches, per_step)

    steps_per_epoch = len(epoch_plan(0)) // per_step
    total_steps = steps_per_epoch * train.epochs
    warmup = warmup_steps(total_steps, train.warmup_ratio)
    ds_config = load_deepspeed_config(train.deepspeed, train, use_gpu)
    dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32

    checkpoint = ray.train.get_checkpoint()  # set when Ray Train resumes this run
    progress = _read_progress(checkpoint)
    if progress.get("final"):  # killed after training ended but before the driver copied the result
        ray.train.report({"step": progress["step"], "reused": True}, checkpoint=checkpoint if rank == 0 else None)
        return

    torch.manual_seed(train.seed)  # the same adapter initialisation on every rank
    model = _build_model(model_path, train, dtype)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[param for param in model.parameters() if param.requires_grad],
        config=ds_config,
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total_steps, warmup, train.lr_schedule)
        ),
        dist_init_required=False,  # Ray Train already created the gloo/NCCL process group
    )

    start_step, step_log = progress.get("step", 0), progress.get("step_log", [])
    if checkpoint:
        with checkpoint.as_directory() as directory:
            engine.load_checkpoint(directory, tag=DS_TAG, load_module_strict=False)
    resumed_from = start_step if checkpoint else None

    progress_bar = tqdm(
        total=total_steps,
        initial=start_step,
        desc="distill",
        unit="step",
        file=sys.stdout,
        mininterval=2.0,
        disable=rank != 0,
    )
    plans: dict[int, list[list[int]]] = {}
    for step in range(start_step, total_steps):
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        plan = plans.setdefault(epoch, epoch_plan(epoch))
        # Dropout masks depend on (seed, step, rank) only, so a resumed run draws the masks the killed one would have.
        torch.manual_seed(train.seed * 1_000_003 + (step + 1) * 1_009 + rank)
        engine.train()
        losses = []
        for sequences in rank_micro_batches(plan, step_in_epoch, rank, world_size, accumulation):
            rows = [pack([examples[i] for i in row]) if len(row) > 1 else examples[row[0]] for row in sequences]
            batch = collate(rows, pad_token_id)
            # No KV cache in training; with one, transformers would also ignore the packed sequences' boundaries.
            loss = engine(**{key: value.to(engine.device) for key, value in batch.items()}, use_cache=False).loss
            engine.backward(loss)
            engine.step()
            losses.append(loss.detach().float())
        # Mean over every micro batch of the global step: the same number on every rank and for any split.
        step_loss = torch.stack(losses).sum()
        dist.all_reduce(step_loss, op=dist.ReduceOp.SUM)
        lr = train.peak_learning_rate * lr_factor(step, total_steps, warmup, train.lr_schedule)
        step_log.append({"step": step + 1, "epoch": epoch + 1, "loss": step_loss.item() / per_step, "lr": lr})
        progress_bar.set_postfix(loss=f"{step_log[-1]['loss']:.4f}", refresh=False)
        progress_bar.update(1)
        done = step + 1
        if done < total_steps and train.checkpoint_every_steps and done % train.checkpoint_every_steps == 0:
            _save_state(engine, rank, {"step": done, "step_log": step_log}, freeze=train.mode == "lora")
    progress_bar.close()

    # Evidence that every rank trained in lockstep: each says how many optimizer steps it took in this session.
    rank_steps: list[Any] = [None] * world_size
    dist.all_gather_object(rank_steps, {"rank": rank, "steps": total_steps - start_step})
    metrics = {
        "losses": [entry["loss"] for entry in step_log],
        "step_log": step_log,
        "steps": total_steps,
        "resumed_from_step": resumed_from,
        "epochs": train.epochs,
        "examples": len(examples),
        "micro_batches_per_epoch": len(plans.get(0) or epoch_plan(0)),
        "global_batch": train.micro_batch_size * per_step,
        "warmup_steps": warmup,
        "ranks": rank_steps,
        "world_size": world_size,
    }
    _export(engine, tokenizer, rank, train.mode, metrics)


def _read_progress(checkpoint: Any) -> dict[str, Any]:
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as directory:
        return json.loads(Path(directory, PROGRESS_FILE).read_text())


def _build_model(model_path: str, train: Any, dtype: Any) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    if train.mode == "full":
        return model
    lora = train.lora
    return get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        ),
    )


def _save_state(engine: Any, rank: int, progress: dict[str, Any], freeze: bool) -> None:
    """All ranks: DeepSpeed state into one Ray Train checkpoint (each rank adds its optimizer shard)."""
    import ray.train

    with tempfile.TemporaryDirectory() as directory:
        # LoRA: the frozen base weights come from the model itself on resume; saving them would cost the model's size.
        engine.save_checkpoint(directory, tag=DS_TAG, exclude_frozen_parameters=freeze)
        if rank == 0:
            Path(directory, PROGRESS_FILE).write_text(json.dumps(progress))
        last = progress["step_log"][-1]
        ray.train.report(
            {"step": progress["step"], "loss": last["loss"]}, checkpoint=ray.train.Checkpoint.from_directory(directory)
        )


def _export(engine: Any, tokenizer: Any, rank: int, mode: str, metrics: dict[str, Any]) -> None:
    """All ranks: gather what ZeRO-3 sharded; rank 0 writes the Hugging Face result as the final checkpoint."""
    import deepspeed
    import ray.train

    from s2d.training.compat_deepspeed import zero3_consolidated_state_dict
    from s2d.training.configs import zero_stage

    stage3 = zero_stage(engine.config) == 3
    with tempfile.TemporaryDirectory() as directory:
        if mode == "lora":
            trainable = [param for param in engine.module.parameters() if param.requires_grad]
            with deepspeed.zero.GatheredParameters(trainable, enabled=stage3):
                if rank == 0:
                    engine.module.save_pretrained(directory)  # PEFT writes the adapter only
        else:
            state = zero3_consolidated_state_dict(engine) if stage3 else None  # collective; rank 0 gets it
            if rank == 0:
                engine.module.save_pretrained(directory, state_dict=state)
        last = {"step": metrics["steps"], "loss": metrics["losses"][-1]}
        if rank != 0:
            ray.train.report(last)
            return
        tokenizer.save_pretrained(directory)
        Path(directory, METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        Path(directory, PROGRESS_FILE).write_text(json.dumps({"final": True, "step": metrics["steps"]}))
        ray.train.report(last, checkpoint=ray.train.Checkpoint.from_directory(directory))


def _quiet_worker_logs() -> None:
    """Every worker's output reaches the driver; keep it to rank 0's progress bar and real warnings."""
    import logging

    from transformers.utils import logging as transformers_logging

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    transformers_logging.disable_progress_bar()  # a weight-loading bar per worker drowns the training bar
