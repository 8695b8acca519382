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
from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from s2d.engine.core.spec_compute import EngineSpec, EvalSpec, GenerationSpec, TrainSpec
from s2d.engine.core.spec_compute import LoraSpec as LoraSpec  # re-exported: the sections' public home is spec
from s2d.engine.core.spec_compute import Section as _Section
from s2d.engine.core.spec_compute import replica_bounds as replica_bounds

# Tokens of the context that an LLM call's prompt keeps at least, beside its max_tokens of output: a budget that
# leaves less would fail every input at the engine (too_long) once it started, so the spec refuses it up front.
MIN_PROMPT_TOKENS = 32


class SpecError(ValueError):
    """A job file or override that cannot be turned into a valid JobSpec (CLI exit code 2)."""


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
    stop: list[str] | None = Field(
        None,
        description="Strings that end this step's generation where one first appears, left out of its text "
        '(e.g. ["\\nQ:"] for a few-shot prompt, so a sample never runs on into an invented next question).',
    )

    @model_serializer(mode="wrap")
    def _without_unset_stop(self, handler):
        # A step without stops (absent or []) dumps as before stops existed, so the job fingerprint of a custom
        # method written then is unchanged; one that names stops differs from one that does not.
        data = handler(self)
        if not data.get("stop"):
            data.pop("stop", None)
        return data


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
    rounds: int = Field(
        1,
        ge=1,
        le=20,
        description="Rounds of iterated distillation (`s2d run` only). 1: today's job, its output in `out`. k > 1: "
        "round 1 is that job in <out>/round-1/; round r+1 samples the method from round r's distilled model (its "
        "merged copy: train.merge is set for LoRA), curates, trains the student's base again on the new pairs (not "
        "round r's model: every round is base + one round's data, so rounds compare by their data alone and no "
        "round fine-tunes on its own outputs twice over) and evaluates, in <out>/round-<r+1>/; "
        "<out>/rounds.md and rounds.json compare the rounds. Each round costs one whole job.",
    )

    @model_validator(mode="after")
    def _method_and_criterion_fit_the_task(self) -> JobSpec:
        from s2d.engine.core.criteria import check_compatibility

        check_compatibility(self.task.name, self.method.model_dump(), self.curate.rule, self.curate.perturbation)
        return self

    @model_validator(mode="after")
    def _seeds_of_one_job(self) -> JobSpec:
        if self.eval.seeds > 1 and self.train.data is not None:
            raise ValueError(
                f"eval.seeds={self.eval.seeds} with train.data (a mixture) is not supported: a mixture's student is "
                "evaluated once per source; use eval.seeds=1"
            )
        return self

    @model_validator(mode="after")
    def _freeform_needs_data(self) -> JobSpec:
        if self.task.name == "freeform" and not self.data.path:
            raise ValueError("task freeform has no built-in inputs: set data.path (and data.columns)")
        return self

    @model_validator(mode="after")
    def _samples_can_differ(self) -> JobSpec:
        """At temperature 0 every sample is the greedy one: n of them cost n times one and vote unanimously."""
        if self.sampling.temperature > 0:
            return self
        for key, samples in (("sampling.n", self.sampling.n), ("eval.system2_samples", self.eval.system2_samples)):
            if samples is not None and samples > 1:
                raise ValueError(
                    f"{key}={samples} needs sampling.temperature > 0: at temperature 0 the samples are all the same "
                    "greedy one (use n=1 for greedy decoding)"
                )
        return self

    @model_validator(mode="after")
    def _outputs_leave_room_for_the_prompt(self) -> JobSpec:
        """A budget the context cannot hold beside a prompt would quarantine every input after the engine started."""
        length = self.engine.max_model_len
        for key, tokens in (
            ("sampling.max_tokens", self.sampling.max_tokens),
            ("eval.max_tokens", self.eval.max_tokens),
        ):
            if tokens > length - MIN_PROMPT_TOKENS:
                raise ValueError(
                    f"{key}={tokens} leaves {max(length - tokens, 0)} tokens of engine.max_model_len={length} for "
                    f"the prompt (at least {MIN_PROMPT_TOKENS}): lower {key} or raise engine.max_model_len"
                )
        return self

    @property
    def out_path(self) -> Path:
        return Path(self.out)

    @property
    def student(self) -> str:
        """The model `s2d train` fine-tunes and `s2d eval` serves as distilled: train.model, else the job's model."""
        return self.train.model or self.model

    @property
    def has_student(self) -> bool:
        """Whether the student is another model than the teacher (the job's `model`, which generates)."""
        return self.student != self.model


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
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise SpecError(f"cannot read job file {str(path)!r}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise SpecError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at line {line})") from None
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
