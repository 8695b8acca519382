"""The job spec: one YAML file, validated by pydantic, with dotted ``key=value`` overrides.

Every section rejects unknown keys, so a typo fails loudly instead of silently using a default.
Defaults follow the System 2 distillation paper (Yu et al., 2024) where it gives one, and the
measurements of the 2-core CPU machine (../shared/FACTS.md) where it does not.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class SpecError(ValueError):
    """A job file or override that cannot be turned into a valid JobSpec (CLI exit code 2)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(_Section):
    name: str = Field("last_letter", description="Built-in synthetic task (see `s2d.engine.core.tasks.TASKS`).")
    num_inputs: int = Field(
        64,
        ge=1,
        description="Unlabeled inputs to generate (ignored when data.path is set: every row of the file is an input).",
    )
    seed: int = Field(0, description="Seed of the task generator; the eval split uses a derived stream.")

    @field_validator("name")
    @classmethod
    def _known_task(cls, name: str) -> str:
        from s2d.engine.core.tasks import get_task

        get_task(name)
        return name


class CustomStepSpec(_Section):
    name: str = Field(description="Step name; later templates read this step's output as `{{ name }}`.")
    prompt: str = Field(
        description="Jinja template (sandboxed, strict): input variables (question, system1_prompt, "
        "the task's fields) and earlier steps' outputs."
    )


class ExtractorSpec(_Section):
    kind: Literal["answer_marker", "last_line", "regex"] = Field(
        "answer_marker",
        description="answer_marker: the last 'Answer: ...' (the built-in prompts ask for it); "
        "last_line: the last non-empty line; regex: the last match of `pattern`.",
    )
    pattern: str | None = Field(None, description="regex kind: its first group (or the whole match) is the answer.")


class MethodSpec(_Section):
    name: str = Field(
        "rar2",
        description="System 2 method whose answers are distilled (see `s2d methods`); "
        "`custom` runs the templates in `steps`.",
    )
    steps: list[CustomStepSpec] | None = Field(
        None,
        description="custom only: the steps in order. The first is sampled n times; each later step "
        "continues each sample's chain once.",
    )
    extractor: ExtractorSpec = Field(
        default_factory=ExtractorSpec, description="How a sample's final text becomes its answer, for any method."
    )

    @field_validator("name")
    @classmethod
    def _known_method(cls, name: str) -> str:
        from s2d.engine.core.methods import CUSTOM, get_method

        if name != CUSTOM:
            get_method(name)
        return name

    @model_validator(mode="after")
    def _custom_has_steps(self) -> MethodSpec:
        from s2d.engine.core.methods import CUSTOM, resolve_method

        if (self.name == CUSTOM) != (self.steps is not None):
            raise ValueError("method.steps is required for the custom method and only for it")
        resolve_method(self.model_dump())  # template syntax, step names, extractor pattern
        return self


class SamplingSpec(_Section):
    n: int = Field(8, ge=1, description="Samples per input, drawn with vLLM's `n` so they share the prompt's KV cache.")
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature; self-consistency needs diversity (> 0).")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(128, ge=1, description="Token budget of each LLM call of the method.")
    seed: int = Field(0, description="Engine seed. Per-request seeds crash vLLM's CPU build at batch size (FACTS.md).")


class CurateSpec(_Section):
    rule: str = Field(
        "majority",
        description="Self-consistency criterion. majority: vote over the n samples. perturbation: also "
        "sample k-1 rewrites of the input that must not change its answer, keep it only if all variants agree "
        "(costs k times the generation). usc: one more LLM call picks the most consistent of the n responses "
        "(for free-form answers that a vote cannot compare). Or a registered name (s2d.engine.core.criteria).",
    )
    threshold: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="Accept when the top answer's share of the n samples is strictly above this; "
        "0.5 = strict majority. "
        "perturbation: applies to each variant only with per_variant_majority. usc: not used.",
    )
    perturbation: str | None = Field(
        None,
        description="rule perturbation: swap_responses (pairwise_judge), shuffle_options (multiple_choice), "
        "rename_entities (last_letter, coin_flip), or a registered name (s2d.engine.core.perturb).",
    )
    variants: int = Field(2, ge=2, description="rule perturbation: versions of each input, the input itself included.")
    per_variant_majority: bool = Field(
        False,
        description="rule perturbation: each variant's answer must also pass `threshold` (stricter, fewer "
        "inputs kept); off: each variant's plurality answer counts (ties rejected).",
    )

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, rule: str) -> str:
        from s2d.engine.core.criteria import get_criterion

        get_criterion(rule)
        return rule


class LoraSpec(_Section):
    """The LoRA adapter (train.mode=lora). Rank and targets trade adapter capacity against memory and step time."""

    r: int = Field(
        8,
        ge=1,
        description="Rank of the update matrices. 8-16 is enough to learn an answer format; "
        "raise it (64+) when the distilled behaviour is far from the base model's.",
    )
    alpha: int = Field(16, ge=1, description="Scale of the update is alpha / r; 2 x r is the usual choice.")
    dropout: float = Field(
        0.05, ge=0.0, lt=1.0, description="Dropout on the adapter's input; 0 for exact reproducibility."
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description="Module names that get an adapter. q_proj/v_proj is the LoRA paper's choice and the cheapest; "
        "adding k_proj, o_proj and the MLP (gate_proj, up_proj, down_proj) learns more per step at more memory.",
    )

    @field_validator("target_modules")
    @classmethod
    def _some_targets(cls, modules: list[str]) -> list[str]:
        if not modules:
            raise ValueError("LoRA needs at least one target module, e.g. [q_proj, v_proj]")
        return modules


class TrainSpec(_Section):
    """The distillation fine-tune: DeepSpeed ZeRO on Ray Train workers (training/)."""

    mode: Literal["lora", "full"] = Field(
        "lora",
        description="lora: train a PEFT adapter (small, fast, the base model stays shared); full: train every "
        "weight (more capacity, needs ZeRO-3 and many GPUs for large models; <out>/model/ is then a whole model).",
    )
    deepspeed: str = Field(
        "zero2",
        description="A config name under training/configs/ (zero2, zero3, zero3_offload) or a path to a JSON "
        "file. zero2 shards optimizer state and gradients (enough for LoRA); zero3 also shards the weights (full "
        "fine-tunes of models that do not fit one GPU); zero3_offload moves optimizer state and weights to host RAM "
        "(fits the largest models on the fewest GPUs, at the slowest steps).",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec)
    epochs: int = Field(2, ge=1)
    learning_rate: float | None = Field(
        None,
        gt=0.0,
        description="Peak learning rate; None: 1e-3 for LoRA, 1e-5 for full. Distillation sets are small "
        "(tens to thousands of pairs), so LoRA at 1e-3 learns the answer format within a few steps; use 1e-4..2e-4 "
        "for LoRA on large sets.",
    )
    lr_schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Decay after warmup: cosine (the usual choice for SFT), linear, or constant."
    )
    warmup_ratio: float = Field(
        0.03,
        ge=0.0,
        lt=1.0,
        description="Share of the optimizer steps spent warming the rate up linearly from "
        "1/(warmup+1) of the peak (never 0, so no step is wasted). Runs under ~30 steps get no warmup at 0.03.",
    )
    batching: Literal["length_grouped", "shuffled", "packed"] = Field(
        "length_grouped",
        description="length_grouped: micro batches of similar length (little padding, faster) in a "
        "shuffled order; shuffled: plain random micro batches; packed: consecutive examples concatenated up to "
        "max_seq_len tokens per sequence (no padding at all; attention stays within each example), so "
        "micro_batch_size counts packed sequences. Short distillation pairs pack many to a sequence: fewer steps.",
    )
    micro_batch_size: int = Field(4, ge=1, description="Examples per worker per forward pass.")
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        description="Micro batches per worker per optimizer step. The global batch is "
        "micro_batch_size x gradient_accumulation_steps x num_workers; for a fixed global batch the loss curve does "
        "not depend on how it is split between workers and accumulation.",
    )
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one per GPU on a GPU cluster).")
    cpus_per_worker: float = Field(1.0, gt=0.0)
    use_gpu: bool | None = Field(None, description="None: use GPUs when the Ray cluster has them.")
    max_seq_len: int = Field(
        256, ge=8, description="Longer prompt+answer examples are truncated from the left of the prompt."
    )
    checkpoint_every_steps: int = Field(
        50,
        ge=0,
        description="Optimizer steps between Ray Train checkpoints (model, optimizer and schedule state); "
        "a killed run resumes from the last one. 0: only the final result. Each checkpoint costs a save of the "
        "trainable state (the adapter, or the whole model in full mode).",
    )
    merge: bool = Field(
        False,
        description="LoRA only: also save the base model with the adapter merged in under <out>/model/merged/ "
        "(a plain Hugging Face model for servers without LoRA support; as large as the base model).",
    )
    seed: int = 0

    @property
    def peak_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-3 if self.mode == "lora" else 1e-5


class EvalSpec(_Section):
    num_inputs: int = Field(32, ge=1, description="Held-out inputs, disjoint from the training inputs.")
    max_tokens: int = Field(32, ge=1, description="Token budget of a direct (System 1) answer.")
    system2_samples: int | None = Field(
        None,
        ge=1,
        description="Samples of the System 2 method per held-out input; default sampling.n, the job's own vote. "
        "Their vote (at curate.threshold) is the reference answer that agreement with System 2 is measured "
        "against, and gives System 2's majority accuracy; the same samples give its single-sample accuracy and cost. "
        "1 is cheapest but makes each single sample its own reference.",
    )
    distilled: Literal["adapter", "merged"] = Field(
        "adapter",
        description="Which form of a LoRA result to serve as distilled System 1: the adapter on the base "
        "model (vLLM with LoRA enabled) or <out>/model/merged/ (needs train.merge=true; one more engine start). "
        "A full fine-tune is always served as the model it is.",
    )


class EngineSpec(_Section):
    """vLLM engine arguments of one replica."""

    dtype: str = Field(
        "auto",
        description="auto: the checkpoint's dtype on GPU; on CPU bfloat16 only where the CPU has native bf16 "
        "(AVX512-BF16 or AMX), else float32, which ran 5x faster than emulated bf16 on an AVX2 EPYC.",
    )
    max_model_len: int = Field(1024, ge=64)
    gpu_memory_utilization: float = Field(
        0.15,
        gt=0.0,
        le=1.0,
        description="On GPU: fraction of device memory for weights + KV cache. On CPU vLLM reads it as the "
        "fraction of host RAM reserved for KV cache, so keep it small there (0.15 on a 24 GiB machine).",
    )
    enforce_eager: bool = Field(True, description="Skip CUDA graph capture: faster start, slower decode on GPU.")
    tensor_parallel_size: int = Field(
        1,
        ge=1,
        description="GPUs that split each layer of one replica. Use the smallest that fits the weights plus KV cache "
        "(7B in bf16: 1 on a 24+ GiB GPU; 70B: 4 on 80 GiB GPUs, 8 for long contexts); it must divide the "
        "model's attention heads and stay within one node, where GPUs talk over NVLink.",
    )
    pipeline_parallel_size: int = Field(
        1,
        ge=1,
        description="Stages of layers of one replica, each on its own tensor_parallel_size GPUs. Only for models "
        "that do not fit one node; stages may sit on different nodes, at the cost of a pipeline bubble.",
    )
    enable_prefix_caching: bool = True
    block_size: int | None = Field(
        None,
        ge=1,
        description="Tokens per KV-cache block. Prefix caching, and the n samples of one prompt, share only whole "
        "blocks. None: 32 on CPU (vLLM's CPU build defaults to 128, too coarse to share a ~80-token prompt: a "
        "call ran 1.9x faster at 32 here), vLLM's own default on GPU. On CPU use a multiple of 32.",
    )


class GenerationSpec(_Section):
    """The pool of data-parallel vLLM replicas and what each one asks Ray for."""

    replicas: int | str = Field(
        1,
        description="Replica actors: a number (fixed pool) or 'min..max' (Ray Data grows the pool up to max while "
        "inputs queue and the cluster has room, and never below min). A fixed pool starts every engine up front; "
        "an autoscaling one starts faster and shares the cluster, but pays an engine start per added replica.",
    )
    cpus_per_replica: float = Field(1.0, gt=0.0, description="CPUs of one replica (of each GPU worker with TP/PP).")
    gpus_per_replica: float | None = Field(
        None,
        description="None: tensor_parallel_size x pipeline_parallel_size GPUs when the cluster has GPUs, else 0. "
        "A fraction (0.5) packs small models two to a GPU.",
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each replica also asks for, e.g. {vllm_node: 1} to keep replicas on the "
        "nodes that advertise it, one per node.",
    )
    batch_size: int = Field(
        64, ge=1, description="Inputs per replica call. Larger batches keep vLLM busier; smaller ones stream sooner."
    )
    max_restarts: int = Field(
        4,
        ge=0,
        description="Times Ray restarts one replica whose process died (kill -9, out of memory, an engine "
        "error); its in-flight batches are retried, and rows are never duplicated. Each restart costs an engine start.",
    )
    max_engine_failures: int = Field(
        3,
        ge=1,
        description="Engine errors (not process deaths) tolerated job-wide. A replica restarts after each; "
        "the one that reaches this count fails the job with the error, so a fault that every restart repeats "
        "(a bad model, a broken GPU) stops the job fast instead of looping.",
    )

    @field_validator("replicas", mode="before")
    @classmethod
    def _replica_bounds(cls, value: int | str) -> int | str:
        low, high = replica_bounds(value)
        return low if low == high else f"{low}..{high}"

    @property
    def min_replicas(self) -> int:
        return replica_bounds(self.replicas)[0]

    @property
    def max_replicas(self) -> int:
        return replica_bounds(self.replicas)[1]


def replica_bounds(replicas: int | str) -> tuple[int, int]:
    """(min, max) of a replica pool written as `4` or `'2..8'`."""
    if isinstance(replicas, bool):
        raise ValueError("replicas is a number or 'min..max'")
    if isinstance(replicas, int):
        low = high = replicas
    else:
        text = str(replicas).strip()
        low_text, sep, high_text = text.partition("..")
        try:
            low, high = (int(low_text), int(high_text)) if sep else (int(text),) * 2
        except ValueError:
            raise ValueError(f"replicas is a number or 'min..max' like '2..8', got {replicas!r}") from None
    if low < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas!r}")
    if high < low:
        raise ValueError(f"replicas 'min..max' needs min <= max, got {replicas!r}")
    return low, high


class ColumnMap(_Section):
    """Which column of the user's file plays which part. Only `input` is required."""

    input: str = Field(
        "input",
        description="The unlabeled input text (for pairwise_judge: the instruction; for "
        "multiple_choice: the question stem).",
    )
    label: str | None = Field(None, description="Ground truth, read by `s2d eval` only; curation never sees it.")
    id: str | None = Field(
        None,
        description="A stable id per row. None: the id is a hash of the input, so a "
        "rerun over a reordered or appended file resumes the same inputs.",
    )
    options: str | None = Field(None, description="multiple_choice: a list of option texts (a JSON list in CSV).")
    response_a: str | None = Field(None, description="pairwise_judge: the first response to judge.")
    response_b: str | None = Field(None, description="pairwise_judge: the second response to judge.")


class DataSpec(_Section):
    """The user's own inputs instead of a built-in task's generator. `task.name` still picks the answer format
    (normalisation and the direct prompt); use `freeform` for free-text answers."""

    path: str | None = Field(
        None,
        description="A Parquet file or folder of them, a JSON Lines file, a CSV file "
        "with a header, or a Hugging Face datasets folder written by save_to_disk.",
    )
    format: Literal["auto", "parquet", "jsonl", "csv", "hf_disk"] = Field(
        "auto", description="auto: from the file extension, or the folder's layout."
    )
    split: str = Field("train", description="The split of a DatasetDict folder to read.")
    columns: ColumnMap = Field(default_factory=ColumnMap)
    limit: int | None = Field(None, ge=1, description="Read only the first rows (a quick trial of a large file).")
    eval_path: str | None = Field(
        None,
        description="Labeled held-out rows for `s2d eval`, in the same format and "
        "columns (data.columns.label required); rows also in `path` are skipped.",
    )


class OutputSpec(_Section):
    inputs_per_shard: int = Field(
        5000,
        ge=1,
        description="Target inputs per Parquet shard; the shard count is fixed per job. A shard is the unit of "
        "commit and resume (smaller: earlier commits, less redone after a crash), but each costs up to three "
        "files and a manifest entry: at 1000 the shard writes took most of curation's time on 10M samples "
        "(bench/curate.py), at 5000 curation ran at 1.5M samples/s per core.",
    )
    keep_samples: bool = Field(
        True,
        description="Write every System 2 sample (each step's text, the extracted and normalised answer, its "
        "tokens) to <out>/samples/, committed with its shard, for `s2d inspect` and audits. false: only the "
        "curated inputs are kept (smaller output; bench/RESULTS.md has the cost).",
    )


class JobSpec(_Section):
    model: str = Field(description="Packaged model name (smollm2-135m), a local Hugging Face folder, or a hub id.")
    out: str = Field("runs/default", description="Output directory of the job.")
    task: TaskSpec = Field(default_factory=TaskSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    method: MethodSpec = Field(default_factory=MethodSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    curate: CurateSpec = Field(default_factory=CurateSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_validator(mode="after")
    def _method_and_criterion_fit_the_task(self) -> JobSpec:
        from s2d.engine.core.criteria import check_compatibility

        check_compatibility(self.task.name, self.method.model_dump(), self.curate.rule, self.curate.perturbation)
        return self

    @model_validator(mode="after")
    def _freeform_needs_data(self) -> JobSpec:
        if self.task.name == "freeform" and not self.data.path:
            raise ValueError("task freeform has no built-in inputs: set data.path (and data.columns)")
        return self

    @property
    def out_path(self) -> Path:
        return Path(self.out)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML (``8``, ``0.5``, ``[a, b]``)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"override {assignment!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    set_value(data, key.strip(), value)


def set_value(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``dotted.key`` to `value` in place (a typed override: the Python API's keyword arguments)."""
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"override {key!r}: {'.'.join(parts[: depth + 1])!r} is not a section")
        node = child
    node[parts[-1]] = value


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "<top level>"
    if first["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    if first["type"] == "missing":
        return f"missing required key {where!r}"
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a rule across sections: the input is the whole job, too long to echo
        return message
    return f"{where}: {message} (got {first.get('input')!r})"


def parse_spec(
    data: dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    source: str = "job",
    values: Mapping[str, Any] | None = None,
) -> JobSpec:
    """Validate a job: `overrides` are ``key=value`` strings (the CLI's), `values` dotted keys with Python values."""
    data = copy.deepcopy(data)
    for assignment in overrides:
        apply_override(data, assignment)
    for key, value in (values or {}).items():
        set_value(data, key, value)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(f"{source}: {_describe(error)}") from None


def load_spec(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), values: Mapping[str, Any] | None = None
) -> JobSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(f"cannot read job file {str(path)!r}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}: not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a job file is a mapping of keys, got {type(data).__name__}")
    return parse_spec(data, overrides, source=str(path), values=values)


def dump_spec(spec: JobSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
