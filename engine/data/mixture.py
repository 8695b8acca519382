"""A mixture (train.data): several s2d outputs, with weights, trained into one student once, on their union.

Every source is checked before Ray starts (`check_sources`): a missing folder, one that is not an s2d output, an
unreadable manifest or job.yaml, or an unfinished `s2d generate` (unless allow_partial) fails with one line naming
the source. Its accepted pairs are read through the verified reader (`read_committed`: each file's checksum and row
count), so an altered shard fails the same way. Sources are only read: never written, never leased.

Dedup by input id across sources: the first source listed keeps an input and later copies are dropped (counted per
source). The order of `train.data` is the user's priority; a rule that looked at the data (the higher weight, the
more votes) would make which answer is trained depend on numbers the user did not choose for that purpose.

Weights are repetition, fixed once: a source of n unique pairs at weight w gives round(w x n) examples per epoch,
every pair floor(w) times and a seeded sample (train.seed) of the rest once, the same sample in every epoch. The
union is then shuffled with the seed, so even `batching: packed` mixes the sources. The trainer sees plain rows:
the counts are exact, the run's fingerprint covers them, and resume works as for one source.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2d.engine.core.spec import JobSpec, SpecError, load_spec
from s2d.engine.data.manifest import Manifest, read_manifest
from s2d.engine.data.ownership import JOB_FILE, MARKER, ForeignOutput, check_format
from s2d.engine.data.storage import OutputLocation

Row = dict[str, str]


class SourceError(ValueError):
    """A mixture source that cannot be used: one line naming it and why."""


@dataclass(frozen=True)
class Source:
    """One checked source: where it is, its weight, the job that made it (its job.yaml) and its manifest."""

    index: int
    out: Path
    weight: float
    spec: JobSpec
    manifest: Manifest

    @property
    def label(self) -> str:
        return f"train.data[{self.index}] ({self.out})"


@dataclass(frozen=True)
class Mixture:
    """The rows the student trains on, and what each source gave (the card's and train_metrics.json's table)."""

    rows: list[Row]
    sources: list[dict[str, Any]]


def is_own_source(spec: JobSpec, out: str | Path) -> bool:
    return Path(out).expanduser().resolve() == spec.out_path.expanduser().resolve()


def stages_to_run(spec: JobSpec, stages: tuple[str, ...]) -> tuple[str, ...]:
    """A mixture's `s2d run`: generate runs only when the job's own `out` is one of its sources (its own task is then
    generated first and mixed in like any other source); else the job trains and evaluates on its sources alone."""
    if spec.train.data is None or "generate" not in stages or set(stages) == {"generate"}:
        return stages
    if any(is_own_source(spec, source.out) for source in spec.train.data):
        return stages
    return tuple(stage for stage in stages if stage != "generate")


def check_sources(spec: JobSpec, allow_partial: bool = False, skip_own: bool = False) -> list[Source]:
    """Each source of `spec.train.data`, checked (see the module's docstring); `skip_own`: leave out the job's own
    out (`s2d run` generates it first)."""
    sources = []
    for index, entry in enumerate(spec.train.data or []):
        if skip_own and is_own_source(spec, entry.out):
            continue
        sources.append(check_source(index, entry.out, entry.weight, allow_partial))
    return sources


def check_source(index: int, out: str, weight: float, allow_partial: bool) -> Source:
    where = f"train.data[{index}] ({out})"
    path = Path(out).expanduser().resolve()
    if not path.exists():
        raise SourceError(f"{where}: no such folder")
    if not path.is_dir():
        raise SourceError(f"{where}: a file, not an s2d output")
    location = OutputLocation.of(path)
    try:
        marker = location.read_bytes(MARKER)
        if marker is not None:
            check_format(_marker_version(marker), location.path(MARKER))
        manifest = read_manifest(location)
    except (ForeignOutput, OSError, ValueError) as problem:
        raise SourceError(f"{where}: unreadable: {_first_line(problem)}") from None
    if manifest is None:
        raise SourceError(f"{where}: not an s2d output (no manifest.json): run `s2d generate` for it first")
    if not allow_partial and len(manifest.committed) < manifest.num_shards:
        raise SourceError(
            f"{where}: `s2d generate` is unfinished, {len(manifest.committed)} of {manifest.num_shards} shards "
            "committed: finish it, or pass --allow-partial (allow_partial=True in Python) to use what is committed"
        )
    if not (path / JOB_FILE).is_file():
        raise SourceError(f"{where}: no {JOB_FILE}, so its task and method are unknown: not an s2d output")
    try:
        job = load_spec(path / JOB_FILE)
    except SpecError as problem:
        raise SourceError(f"{where}: unreadable {JOB_FILE}: {problem}") from None
    return Source(index, path, weight, job, manifest)


def read_mixture(spec: JobSpec, allow_partial: bool = False) -> Mixture:
    """The weighted, deduplicated union of the sources' accepted pairs (verified as read), shuffled by train.seed."""
    from s2d.engine.data.shards import read_committed

    sources = check_sources(spec, allow_partial)
    per_source = []
    for source in sources:
        try:
            table = read_committed(source.out, "shards", columns=["input_id", "prompt", "answer"])
        except (ForeignOutput, OSError, ValueError) as problem:  # AlteredFile is a ValueError
            raise SourceError(f"{source.label}: unreadable: {_first_line(problem)}") from None
        per_source.append([row for row in table.to_pylist() if row["prompt"] and row["answer"]])
    kept, duplicates = dedup_by_input_id(per_source)
    rows: list[Row] = []
    summary = []
    for source, unique, dropped in zip(sources, kept, duplicates):
        taken = weighted_rows(unique, source.weight, spec.train.seed + source.index)
        rows += taken
        summary.append(
            {
                "out": str(source.out),
                "fingerprint": source.manifest.fingerprint,
                "task": source.spec.task.name,
                "method": source.spec.method.name,
                "model": source.spec.model,
                "weight": source.weight,
                "accepted": len(unique) + dropped,
                "duplicates": dropped,
                "examples": len(taken),
            }
        )
    random.Random(spec.train.seed).shuffle(rows)
    return Mixture([{"prompt": row["prompt"], "answer": row["answer"]} for row in rows], summary)


def dedup_by_input_id(per_source: list[list[Row]]) -> tuple[list[list[Row]], list[int]]:
    """Each source's rows without the input ids an earlier source (in train.data's order) already gave, and how many
    each lost. Within one source an id is unique already (one committed row per input)."""
    seen: set[str] = set()
    kept, dropped = [], []
    for rows in per_source:
        unique = [row for row in rows if row["input_id"] not in seen]
        seen.update(row["input_id"] for row in unique)
        kept.append(unique)
        dropped.append(len(rows) - len(unique))
    return kept, dropped


def examples_taken(unique: int, weight: float) -> int:
    """round(weight x unique), half up, and at least 1 from a source that has any pair (its weight is above 0)."""
    if unique == 0:
        return 0
    return max(1, int(weight * unique + 0.5))


def weighted_rows(rows: list[Row], weight: float, seed: int) -> list[Row]:
    """`rows` repeated to `examples_taken`: every row floor(weight) times, then a seeded sample of the rest."""
    taken = examples_taken(len(rows), weight)
    if not rows:
        return []
    copies, extra = divmod(taken, len(rows))
    return rows * copies + random.Random(seed).sample(rows, extra)


def source_eval_spec(spec: JobSpec, source: Source) -> JobSpec:
    """The job that evaluates the mixture's student on one source: the source's task, data, method, sampling,
    criterion, model (its teacher) and evaluation (its held-out set, its budgets: the numbers its own `s2d eval`
    reported are comparable), with the mixture's student, distilled form, engine and replica settings."""
    data = source.spec.model_dump(mode="json")
    data.update(
        out=spec.out,
        train=spec.train.model_dump(mode="json") | {"model": spec.student, "data": None},
        # one student trained once (a mixture has one seed): a source's own eval.seeds does not apply to it
        eval=source.spec.eval.model_dump(mode="json") | {"distilled": spec.eval.distilled, "seeds": 1},
        engine=spec.engine.model_dump(mode="json"),
        generation=spec.generation.model_dump(mode="json"),
    )
    try:
        return JobSpec.model_validate(data)
    except ValueError as problem:  # pydantic's ValidationError
        raise SourceError(
            f"{source.label}: cannot be evaluated with this job's settings: {_first_line(problem)}"
        ) from None


def _marker_version(data: bytes) -> Any:
    import json

    try:
        marker = json.loads(data)
    except ValueError:
        return None
    return marker.get("version") if isinstance(marker, dict) else None


def _first_line(problem: Exception) -> str:
    return (str(problem).strip().splitlines() or [type(problem).__name__])[0]


MODEL_CARD = "README.md"  # in model/: what Hugging Face shows as the model card


def mixture_model_card(spec: JobSpec, metrics: dict[str, Any]) -> str:
    """model/README.md of a mixture: the student, what it was trained on (each source: out, job fingerprint,
    weight, examples taken) and how dedup and weights were applied."""
    sources = metrics["mixture"]
    lines = [
        "---",
        f"base_model: {spec.student}",
        "library_name: peft" if spec.train.mode == "lora" else "library_name: transformers",
        "tags: [s2d, system-2-distillation, mixture]",
        "---",
        "",
        f"# s2d mixture: {', '.join(sorted({source['task'] for source in sources}))} distilled into {spec.student}",
        "",
        f"One {spec.train.mode} fine-tune of `{spec.student}` on the accepted System 2 pairs of {len(sources)} s2d "
        f"outputs: {metrics['rows']} examples per epoch, {metrics.get('epochs', spec.train.epochs)} epochs, "
        f"{metrics.get('steps', 0)} optimizer steps. Duplicates by input id were dropped from later sources (the "
        "first source listed keeps an input); a weight w takes round(w x unique pairs) examples per epoch (every "
        "pair floor(w) times, a seeded sample of the rest).",
        "",
        "| source (out) | job fingerprint | task | method | teacher | accepted | duplicates dropped | weight "
        "| examples taken |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| `{source['out']}` | `{source['fingerprint']}` | {source['task']} | {source['method']} | {source['model']} "
        f"| {source['accepted']} | {source['duplicates']} | {source['weight']:g} | {source['examples']} |"
        for source in sources
    ]
    lines += ["", f"`s2d eval` reports the student on each source's own held-out inputs: `{spec.out}/eval/report.md`."]
    return "\n".join(lines) + "\n"
