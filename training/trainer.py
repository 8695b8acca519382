"""Distillation fine-tune: a PEFT LoRA adapter trained under DeepSpeed ZeRO on Ray Train workers.

The driver reads the accepted (prompt, answer) rows, starts one Ray Train worker per data-parallel rank, and
copies the adapter that rank 0 reports as a checkpoint into `model_out`. Each worker resolves the model
itself (packaged models are converted per node), so a multi-node cluster only shares the Ray storage path.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.spec import JobSpec

RUN_NAME = "distill"
METRICS_FILE = "train_metrics.json"
_INSTALL_HINT = "pip install 'ray[data,train]' deepspeed peft transformers torch (or run `make venv`)"


def read_accepted_rows(shards_dir: Path) -> list[dict[str, str]]:
    """The (prompt, answer) pairs of every Parquet shard under `shards_dir`, in a stable file order."""
    import pyarrow.parquet as pq

    rows: list[dict[str, str]] = []
    # Dot-files are half-written shards (engine.shards writes under a temporary name, then renames).
    files = sorted(path for path in Path(shards_dir).rglob("*.parquet") if not path.name.startswith("."))
    for path in files:
        table = pq.read_table(path, columns=["prompt", "answer"])
        rows.extend(row for row in table.to_pylist() if row["prompt"] and row["answer"])
    return rows


def train_adapter(spec: JobSpec, shards_dir: Path, model_out: Path) -> dict[str, Any]:
    """Train a LoRA adapter on the accepted rows under `shards_dir`; save it (and its tokenizer) to `model_out`."""
    shards_dir, model_out = Path(shards_dir), Path(model_out)
    rows = read_accepted_rows(shards_dir)
    if not rows:
        raise ValueError(f"no accepted examples in {shards_dir}: lower curate.threshold or raise task.num_inputs")
    try:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from cluster.connect import connect
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(f"training needs Ray Train ({error}); {_INSTALL_HINT}") from error

    ray = connect()
    use_gpu = spec.train.use_gpu
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    from training.configs import load_deepspeed_config

    load_deepspeed_config(spec.train.deepspeed, spec.train, use_gpu)  # fail in the driver, not in every worker

    # Absolute, so workers on other nodes write to the same (shared) place and nothing lands in ~/ray_results.
    storage_path = Path(spec.out).expanduser().resolve() / "train_ray"
    # This driver does not resume training; a stale run of the same name would make Ray Train restore its state.
    shutil.rmtree(storage_path / RUN_NAME, ignore_errors=True)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"spec": spec, "rows": rows, "use_gpu": use_gpu},
        scaling_config=ScalingConfig(
            num_workers=spec.train.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": spec.train.cpus_per_worker},
        ),
        run_config=RunConfig(storage_path=str(storage_path), name=RUN_NAME),
    )
    started = time.monotonic()
    result = trainer.fit()
    seconds = time.monotonic() - started
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without an adapter checkpoint (Ray Train run under {storage_path})")

    model_out.mkdir(parents=True, exist_ok=True)
    result.checkpoint.to_directory(str(model_out))
    metrics = json.loads((model_out / METRICS_FILE).read_text())
    metrics.update(
        rows=len(rows),
        seconds=round(seconds, 2),
        num_workers=spec.train.num_workers,
        use_gpu=use_gpu,
        deepspeed_config=spec.train.deepspeed,
        adapter_dir=str(model_out),
    )
    (model_out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return metrics


def epoch_indices(num_examples: int, rank: int, world_size: int, per_rank: int, seed: int) -> list[int]:
    """This rank's example indices for one epoch: a seeded shuffle, strided by rank, wrapped to `per_rank` items.

    Every rank gets exactly `per_rank` indices (the shorter shards wrap around), so all ranks run the same
    number of steps and DeepSpeed's collectives never wait on a rank that has finished.
    """
    order = list(range(num_examples))
    random.Random(seed).shuffle(order)
    return [order[(rank + world_size * i) % num_examples] for i in range(per_rank)]


def examples_per_rank(num_examples: int, world_size: int, micro_batch_size: int, accumulation: int) -> int:
    """Examples each rank sees per epoch: its share, rounded up to whole optimizer steps."""
    per_optimizer_step = micro_batch_size * accumulation
    return math.ceil(math.ceil(num_examples / world_size) / per_optimizer_step) * per_optimizer_step


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: LoRA under DeepSpeed on this rank's share of the examples."""
    use_gpu: bool = config["use_gpu"]
    if not use_gpu:
        # DeepSpeed picks its accelerator once, at import; without this it looks for CUDA and fails on CPU nodes.
        os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        import deepspeed
        import ray.train
        import torch
        import torch.distributed as dist
        from peft import LoraConfig, get_peft_model
        from tqdm import tqdm
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as error:  # pragma: no cover - depends on the worker's install
        raise ImportError(f"a training worker is missing a package ({error}); {_INSTALL_HINT}") from error

    from engine.models import resolve_model
    from training.configs import load_deepspeed_config
    from training.sft import build_examples, collate

    _quiet_worker_logs()
    spec: JobSpec = config["spec"]
    train = spec.train
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(train.seed)
    if use_gpu:
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())

    model_path = resolve_model(spec.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    examples = build_examples(config["rows"], tokenizer, train.max_seq_len)
    if not examples:
        raise ValueError(f"every answer is longer than train.max_seq_len={train.max_seq_len} tokens; raise it")
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    per_rank = examples_per_rank(len(examples), world_size, train.micro_batch_size, train.gradient_accumulation_steps)
    steps_per_epoch = per_rank // (train.micro_batch_size * train.gradient_accumulation_steps)
    total_steps = steps_per_epoch * train.epochs
    ds_config = load_deepspeed_config(train.deepspeed, train, use_gpu, total_steps=total_steps)
    dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    lora = train.lora
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[param for param in model.parameters() if param.requires_grad],
        config=ds_config,
        dist_init_required=False,  # Ray Train already created the gloo/NCCL process group
    )

    losses: list[float] = []
    progress = tqdm(
        total=total_steps, desc="distill", unit="step", file=sys.stdout, mininterval=2.0, disable=rank != 0
    )
    for epoch in range(train.epochs):
        engine.train()
        indices = epoch_indices(len(examples), rank, world_size, per_rank, seed=train.seed + epoch)
        window: list[torch.Tensor] = []
        epoch_losses: list[float] = []
        for start in range(0, per_rank, train.micro_batch_size):
            batch = collate([examples[i] for i in indices[start : start + train.micro_batch_size]], pad_token_id)
            loss = engine(**{key: value.to(engine.device) for key, value in batch.items()}).loss
            engine.backward(loss)
            at_boundary = engine.is_gradient_accumulation_boundary()  # must be asked before step() advances it
            engine.step()
            window.append(loss.detach().float())
            if at_boundary:
                # The logged loss is the mean over all ranks, so it is the same number whichever rank prints it.
                step_loss = torch.stack(window).mean()
                dist.all_reduce(step_loss, op=dist.ReduceOp.SUM)
                epoch_losses.append(step_loss.item() / world_size)
                window = []
                progress.set_postfix(loss=f"{epoch_losses[-1]:.4f}", refresh=False)
                progress.update(1)
        losses.extend(epoch_losses)
        epoch_metrics = {"epoch": epoch + 1, "loss": sum(epoch_losses) / len(epoch_losses), "steps": len(losses)}
        if epoch + 1 < train.epochs:
            ray.train.report(epoch_metrics)
    progress.close()

    # Evidence that every rank trained in lockstep: each says how many optimizer steps it took.
    rank_steps: list[Any] = [None] * world_size
    dist.all_gather_object(rank_steps, {"rank": rank, "steps": len(losses)})

    # Every rank reports the last epoch (Ray Train needs equal report counts); only rank 0 attaches the adapter.
    if rank != 0:
        ray.train.report(epoch_metrics)
        return
    worker_metrics = {
        "losses": losses,
        "steps": total_steps,
        "epochs": train.epochs,
        "examples": len(examples),
        "examples_per_rank_per_epoch": per_rank,
        "ranks": rank_steps,
        "world_size": world_size,
    }
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        # ZeRO-2 shards only optimizer state and gradients, so rank 0 holds the full adapter weights.
        engine.module.save_pretrained(checkpoint_dir)
        tokenizer.save_pretrained(checkpoint_dir)
        Path(checkpoint_dir, METRICS_FILE).write_text(json.dumps(worker_metrics, indent=2))
        ray.train.report(epoch_metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir))


def _quiet_worker_logs() -> None:
    """Every worker's output reaches the driver; keep it to rank 0's progress bar and real warnings."""
    import logging

    from transformers.utils import logging as transformers_logging

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    transformers_logging.disable_progress_bar()  # a weight-loading bar per worker drowns the training bar
