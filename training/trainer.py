"""Distillation fine-tune: LoRA (PEFT) or full, under DeepSpeed ZeRO, on Ray Train workers.

The model trained is the job's student (`train.model`, else the job's `model`, which generated the pairs): the pairs are
text, chat-formatted with the student's own tokenizer and template, so teacher and student may differ. This is the
driver: it reads the committed (prompt, answer) rows, starts one Ray Train worker per data-parallel rank
(s2d.training.worker) and swaps the result rank 0 reports in as `<out>/model/`, whole (s2d.engine.data.folder_swap:
readers see the old model or the new one, never a mix or neither). It trains only on a finished `s2d generate` unless
told otherwise (`check_generate_finished`); its caller holds the output's lease (s2d.engine.stages.api). Every
`train.checkpoint_every_steps` optimizer steps all ranks save their DeepSpeed state (weights or adapter, sharded
optimizer state, lr schedule) into one Ray Train checkpoint; rerunning the same job on the same `out` resumes from the
latest one (Ray Train restores it), while a changed spec or data set starts afresh. Each worker resolves the model
itself (packaged models are converted per node), so a multi-node cluster only shares the Ray storage path.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from s2d.engine.core.spec import JobSpec
from s2d.engine.data.folder_swap import clear_leftovers, replace_folder, staging_folder
from s2d.training.worker import INSTALL_HINT, METRICS_FILE, PROGRESS_FILE, train_worker

RUN_NAME = "distill"
FINGERPRINT_FILE = "s2d_fingerprint.json"  # next to Ray Train's run folder: what its checkpoints belong to
MERGED_DIR = "merged"


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
        raise ImportError(f"training needs Ray Train ({error}); {INSTALL_HINT}") from error
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
        train_worker,
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
