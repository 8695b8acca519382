"""The job spec's compute sections: the fine-tune (`train:`, its `lora:`), the evaluation (`eval:`), the vLLM
engine of a replica (`engine:`) and the replica pool (`generation:`). Split from spec.py, which assembles the JobSpec.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """A section of the job spec: unknown keys are errors (a typo fails loudly), values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSpec(Section):
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


class MixtureSource(Section):
    """One s2d output a mixture trains on (train.data), read through the verified reader, never written."""

    out: str = Field(description="The source's output folder: a finished `s2d generate` with its job.yaml.")
    weight: float = Field(
        1.0,
        le=100.0,
        allow_inf_nan=False,
        description="Examples of this source per epoch, as a multiple of its accepted pairs (after dedup): 1 takes "
        "each once, 2 each twice, 0.5 a seeded half (the same half every epoch). Repetition rather than a loss "
        "weight: counts stay exact and every example weighs the same, but a high weight on a small source "
        "repeats the same few pairs (it may memorise them); a low one drops pairs instead of down-weighting them.",
    )

    @field_validator("weight")
    @classmethod
    def _positive(cls, weight: float) -> float:
        if weight <= 0:
            raise ValueError("a source's weight must be above 0: leave the source out instead")
        return weight


class TrainSpec(Section):
    """The distillation fine-tune: DeepSpeed ZeRO on Ray Train workers (training/)."""

    data: list[MixtureSource] | None = Field(
        None,
        description="A mixture: several s2d outputs with weights ([{out: runs/a, weight: 1}, {out: runs/b, "
        "weight: 2}]) trained into the one student, once, on their union (deduplicated by input id: the first "
        "source listed keeps an input, so the order is the priority); `s2d eval` then evaluates it on each "
        "source job's own held-out inputs (its job.yaml's task, method and eval section). None: the job's own "
        "output. With it, `s2d run` generates only when the job's own `out` is one of the sources (its task is "
        "generated, then mixed in); else it trains and evaluates on the sources alone. engine/data/mixture.py.",
    )
    model: str | None = Field(
        None,
        description="The student: the model `s2d train` fine-tunes on the teacher's (the job's `model`) accepted "
        "pairs, chat-formatted with the student's own template (the pairs are text, so its tokenizer may differ), "
        "and `s2d eval` reports as distilled System 1 beside its own base System 1. A packaged name, a local "
        "Hugging Face folder or a hub id; None: the job's `model` distils into itself. A smaller student serves "
        "cheaper (fewer weights, faster answers) but starts weaker, so it may gain more and still end below the "
        "teacher's System 2.",
    )
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

    @field_validator("data")
    @classmethod
    def _distinct_sources(cls, sources: list[MixtureSource] | None) -> list[MixtureSource] | None:
        if sources is not None and not sources:
            raise ValueError("a mixture needs at least one source (or leave train.data out: the job's own output)")
        outs = [source.out.rstrip("/") for source in sources or []]
        repeated = sorted({out for out in outs if outs.count(out) > 1})
        if repeated:
            raise ValueError(f"{repeated[0]} is listed twice: give it one entry with the weight you want")
        return sources

    @property
    def peak_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-3 if self.mode == "lora" else 1e-5


class EvalSpec(Section):
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
    seeds: int = Field(
        1,
        ge=1,
        le=20,
        description="Distillations trained and evaluated, seed s with train.seed + s (s = 0..k-1; seed 0 in "
        "<out>/model/, the others in <out>/model-seed<s>/): the report adds each seed's distilled accuracy and "
        "agreement and their spread (mean, min-max), since one run moves by the fine-tune's own randomness. Each "
        "extra seed costs one more fine-tune and one more distilled evaluation (its own engine start for a merged or "
        "full model); base System 1 and System 2 run once, as they do not depend on the training seed. A finished "
        "seed is not retrained on a rerun. The paired comparisons stay those of seed 0.",
    )


class EngineSpec(Section):
    """vLLM engine arguments of one replica."""

    dtype: Literal["auto", "float32", "float16", "bfloat16", "half", "float"] = Field(
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


class GenerationSpec(Section):
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
        ge=0.0,
        description="None: tensor_parallel_size x pipeline_parallel_size GPUs when the cluster has GPUs, else 0. "
        "A fraction (0.5) packs small models two to a GPU.",
    )
    resources: dict[str, Annotated[float, Field(ge=0.0)]] = Field(
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
    batch_timeout_s: float | None = Field(
        900.0,
        gt=0.0,
        le=86400.0,
        description="Seconds one replica call (a batch of batch_size inputs, every step of its method) may take; "
        "None: no limit. A batch past it has its requests aborted and is retried once on a fresh engine (the "
        "replica restarts, at most max_restarts // 2 times for this reason, else the retry runs on the same "
        "engine); past it again, its inputs are quarantined as batch_timeout and the job goes on. Too low "
        "quarantines slow but healthy batches (long max_tokens on a CPU), too high lets a hung engine hold its "
        "batches that long: set it a few times above your slowest batch (on 2 CPU cores a 64-input demo batch "
        "takes about 100 s).",
    )
    straggler_factor: float | None = Field(
        3.0,
        gt=1.0,
        le=1000.0,
        description="Re-issue stragglers: at the job's tail (every input handed to a replica), a batch held longer "
        "than this many times the pool's median batch time (and than straggler_min_s) is run again by a replica done "
        "with its own batches; whichever copy finishes first is kept, exactly once, and the other is aborted. None: "
        "never, and the job waits at its tail for its slowest replica's batches. Lower catches milder stragglers but "
        "spends more engine time on copies that lose; that time is a replica's that had nothing else to run. "
        "Needs two or more replicas (one replica runs no coordinator). With one replica 10x slower than the other, "
        "the job took 1.03-1.13x the healthy replica alone on two CPU cores, 2.24x with None (bench/slow_replica.py).",
    )
    straggler_min_s: float = Field(
        10.0,
        ge=0.0,
        le=86400.0,
        description="Seconds a batch must have run before it may be re-issued, whatever the median: a batch this "
        "short is not worth a copy (its time is mostly noise), and it costs the straggler coordinator two messages "
        "(its start and end); a longer one is registered with its rows. Lower it for jobs of a few seconds per batch.",
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
