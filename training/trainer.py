"""Distillation fine-tune: LoRA (PEFT) or full, under DeepSpeed ZeRO, on Ray Train workers.

The model trained is the job's student (`train.model`, else the job's `model`, which generated the pairs): the
pairs are text, chat-formatted with the student's own tokenizer and template, so teacher and student may differ.
The driver reads the committed (prompt, answer) rows, starts one Ray Train worker per data-parallel rank and
swaps the result rank 0 reports in as `<out>/model/`, whole (s2d.engine.data.folder_swap: readers see the old
model or the new one, never a mix or neither). It trains only on a finished `s2d generate` unless told otherwise
(`check_generate_finished`); its caller holds the output's lease (s2d.engine.stages.api). Every
`train.checkpoint_every_steps` optimizer steps all ranks save their DeepSpeed state (weights or adapter, sharded
optimizer state, lr schedule) into one Ray Train checkpoint; rerunning the same job on the same `out` resumes from
the latest one (Ray Train restores it), while a changed spec or data set starts afresh. Each worker resolves the
model itself (packaged models are converted per node), so a multi-node cluster only shares the Ray storage path.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from s2d.engine.core.spec import JobSpec
from s2d.engine.data.folder_swap import clear_leftovers, replace_folder, staging_folder

RUN_NAME = "distill"
METRICS_FILE = "train_metrics.json"
PROGRESS_FILE = "progress.json"  # inside every checkpoint: the step it holds and the loss log so far
FINGERPRINT_FILE = "s2d_fingerprint.json"  # next to Ray Train's run folder: what its checkpoints belong to
DS_TAG = "deepspeed"  # DeepSpeed's sub-folder inside a checkpoint
MERGED_DIR = "merged"
_INSTALL_HINT = "pip install 'ray[data,train]' deepspeed peft transformers torch (or run `make venv`)"


def read_accepted_rows(out: Path) -> list[dict[str, str]]:
    """The (prompt, answer) pairs of the shards `<out>/manifest.json` lists as committed, in manifest order, each file
    verified as it is read: AlteredFile (a ValueError, one line naming the file and why) when one changed after its
    commit, so neither `s2d train` nor `s2d export` ever uses altered rows."""
    from s2d.engine.data.shards import read_committed

    table = read_committed(Path(out), "shards").select(["prompt", "answer"])
    return [row for row in table.to_pylist() if row["prompt"] and row["answer"]]


class UnfinishedOutput(ValueError):
    """`s2d generate` has not committed every shard of the output: training on it would silently use part of it."""


def check_generate_finished(out: Path, allow_partial: bool, stage: str = "train") -> None:
    """Refuse, in one line, an output whose manifest lists fewer committed shards than it has, unless
    `allow_partial`. No manifest is left to the stage's own error (nothing to train on)."""
    from s2d.engine.data.manifest import read_manifest

    manifest = read_manifest(out)
    if allow_partial or manifest is None or len(manifest.committed) >= manifest.num_shards:
        return
    raise UnfinishedOutput(
        f"{out}: `s2d generate` is unfinished, {len(manifest.committed)} of {manifest.num_shards} shards committed: "
        f"rerun `s2d generate` to finish it, or pass --allow-partial (allow_partial=True in Python) to {stage} on "
        "what is committed"
    )


def train_model(
    spec: JobSpec,
    model_out: Path | None = None,
    *,
    allow_partial: bool = False,
    lease: Any = None,
    run_dir: Path | None = None,
    reuse_finished: bool = False,
) -> dict[str, Any]:
    """Fine-tune on the committed shards of `spec.out`; save the adapter (or full model) to `<out>/model/`.
    `allow_partial`: train on an unfinished generate's shards; `lease` (the output's) is checked before the swap.
    `model_out` and `run_dir` (Ray Train's, default `<out>/train_ray`) place another seed's fine-tune (eval.seeds);
    `reuse_finished`: a `model_out` that already holds this very run's model (same fingerprint) is kept as it is,
    without starting Ray Train."""
    out = Path(spec.out).expanduser().resolve()
    model_out = Path(model_out) if model_out else out / "model"
    mixture = None
    if spec.train.data is not None:  # several outputs, weighted and deduplicated (engine/data/mixture.py)
        from s2d.engine.data.mixture import read_mixture

        mixture = read_mixture(spec, allow_partial)
        rows = mixture.rows
        if not rows:
            raise ValueError("no accepted examples in any source of train.data: run `s2d generate` on them first")
    else:
        check_generate_finished(out, allow_partial)
        rows = read_accepted_rows(out)
    if not rows:
        raise ValueError(
            f"no accepted examples in the committed shards of {out} (manifest.json): run `s2d generate` first, "
            "or lower curate.threshold / raise task.num_inputs"
        )
    if spec.train.merge and spec.train.mode != "lora":
        raise ValueError("train.merge applies to LoRA only: a full fine-tune already saves a whole model")
    clear_leftovers(model_out)  # what an interrupted swap left (the caller holds the lease: no swap is running)
    try:
        from ray.train import CheckpointConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from s2d.cluster.connect import connect
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(f"training needs Ray Train ({error}); {_INSTALL_HINT}") from error
    from s2d.training import compat_deepspeed
    from s2d.training.configs import load_deepspeed_config, zero_stage
    from s2d.training.plan import run_fingerprint

    ray = connect()
    use_gpu = spec.train.use_gpu
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    ds_config = load_deepspeed_config(spec.train.deepspeed, spec.train, use_gpu)  # fail here, not in every worker
    if spec.train.mode == "full" and zero_stage(ds_config) == 3:
        compat_deepspeed.check()  # the export's private gather: refused in one line before training, if gone

    # Absolute, so workers on other nodes write to the same (shared) place and nothing lands in ~/ray_results.
    storage_path = Path(run_dir) if run_dir else out / "train_ray"
    fingerprint = run_fingerprint(  # the student is the model argument: a default job's fingerprint is as before
        # train.data is left out: the rows it gives (weighted, deduplicated, in order) are fingerprinted themselves
        spec.train.model_dump(mode="json", exclude={"checkpoint_every_steps", "merge", "model", "data"})
        | {"use_gpu": use_gpu},
        spec.student,
        rows,
    )
    if reuse_finished and (finished := _finished_metrics(model_out, fingerprint)) is not None:
        return finished
    _claim_run_dir(storage_path, fingerprint)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"spec": spec, "rows": rows, "use_gpu": use_gpu},
        scaling_config=ScalingConfig(
            num_workers=spec.train.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": spec.train.cpus_per_worker},
        ),
        run_config=RunConfig(
            storage_path=str(storage_path), name=RUN_NAME, checkpoint_config=CheckpointConfig(num_to_keep=2)
        ),
    )
    started = time.monotonic()
    result = trainer.fit()
    seconds = time.monotonic() - started
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a model checkpoint (Ray Train run under {storage_path})")

    # The new model (its merged copy with it) is written beside the old one and swapped in whole.
    staged = staging_folder(model_out)
    try:
        result.checkpoint.to_directory(str(staged))
        metrics = _finish_model(spec, staged, model_out, len(rows), seconds, use_gpu, result, fingerprint)
        if mixture is not None:
            _describe_mixture(spec, staged, metrics, mixture.sources)
        if lease is not None:
            lease.check()  # a train that lost the output to another job must not replace its model
        replace_folder(staged, model_out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # gone after a swap; a failed one leaves no temporary folder
    return metrics


def _finished_metrics(model_out: Path, fingerprint: str) -> dict[str, Any] | None:
    """`model_out`'s train_metrics.json when it records this run's fingerprint (the same spec, student and rows):
    that model is what a retrain would produce, marked reused. None otherwise (absent, another run, unreadable)."""
    path = model_out / METRICS_FILE
    try:
        metrics = json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None
    if not isinstance(metrics, dict) or metrics.get("fingerprint") != fingerprint:
        return None
    return metrics | {"reused_finished_run": True, "resumed_from_step": None}


def _finish_model(
    spec: JobSpec,
    staged: Path,
    model_out: Path,
    rows: int,
    seconds: float,
    use_gpu: bool,
    result: Any,
    fingerprint: str,
) -> dict[str, Any]:
    """The staged model's metrics file (and its merged copy, with train.merge), as `model_out` will hold them."""
    (staged / PROGRESS_FILE).unlink(missing_ok=True)
    metrics = json.loads((staged / METRICS_FILE).read_text())
    metrics.update(
        rows=rows,
        seconds=round(seconds, 2),
        num_workers=spec.train.num_workers,
        use_gpu=use_gpu,
        deepspeed_config=spec.train.deepspeed,
        mode=spec.train.mode,
        model_dir=str(model_out),
        student=spec.student,  # the model trained: train.model, else the job's model (the teacher)
        teacher=spec.model,
        # True when the same run had already finished: its result was reported again, nothing retrained.
        reused_finished_run=bool(result.metrics and result.metrics.get("reused")),
        fingerprint=fingerprint,  # what a rerun compares to keep this model instead of training it again
    )
    if spec.train.merge:
        merge_adapter(spec.student, staged, staged / MERGED_DIR)
        metrics["merged_dir"] = str(model_out / MERGED_DIR)
    (staged / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return metrics


def _describe_mixture(spec: JobSpec, staged: Path, metrics: dict[str, Any], sources: list[dict[str, Any]]) -> None:
    """A mixture's model names its sources: in train_metrics.json and in the model card (README.md)."""
    from s2d.engine.data.mixture import mixture_model_card

    metrics["mixture"] = sources
    (staged / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    (staged / "README.md").write_text(mixture_model_card(spec, metrics))


def _claim_run_dir(storage_path: Path, fingerprint: str) -> None:
    """Keep Ray Train's run folder when it belongs to this run (so fit() resumes from it); else clear it."""
    run_dir, marker = storage_path / RUN_NAME, storage_path / FINGERPRINT_FILE
    recorded = json.loads(marker.read_text()).get("fingerprint") if marker.is_file() else None
    if recorded != fingerprint:
        shutil.rmtree(run_dir, ignore_errors=True)
    storage_path.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": fingerprint}))


def merge_adapter(model: str, adapter_dir: Path, merged_dir: Path) -> Path:
    """Base model + adapter merged into plain weights, saved as a Hugging Face model (vLLM/transformers load it)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s2d.engine.data.models import resolve_model

    base = AutoModelForCausalLM.from_pretrained(resolve_model(model), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(merged_dir))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(merged_dir))
    return merged_dir


def _train_worker(config: dict[str, Any]) -> None:
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
        raise ImportError(f"a training worker is missing a package ({error}); {_INSTALL_HINT}") from error

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
