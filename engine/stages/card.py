"""`<out>/README.md`: the dataset card `s2d generate` writes when a job completes.

Its YAML header declares the Hugging Face `datasets` configs, so `datasets.load_dataset("<out>")` reads the
accepted shards as the train split and `load_dataset("<out>", "rejected" | "quarantine" | "samples")` the
other tables; the body is the provenance a reader of a published data set needs (what made it, with which
prompts, criterion and sampling, what was kept and why the rest was not) and how to use it.

The configs name only the committed shard files of the table folders, so what `load_dataset` reads is never the
output's private state (logs, the lease, s2d's marker, the job file, working folders); the card says which files
those are and gives an upload command that leaves them out.
"""

from __future__ import annotations

import datetime
from collections import Counter

import yaml

from s2d.engine.core.spec import JobSpec
from s2d.engine.data.manifest import Counts, Manifest, read_manifest
from s2d.engine.data.samples import SAMPLES
from s2d.engine.data.shards import KINDS, read_committed
from s2d.engine.data.storage import OutputLocation

CARD = "README.md"
SHARD_FILES = "shard-*.parquet"  # a table folder's committed files: never its temporary names or a user's file
# What an output holds besides the card, the manifest and the tables: private to the run, safe to leave out of
# an upload (and left out by the card's command). Nothing here is read by `load_dataset`.
PRIVATE_FILES = {
    ("logs/",): "the run's logs (local paths, host names)",
    ("job.yaml",): "the resolved job file (local paths); what it says about how the data was made is above",
    ("metrics.json",): "the run's timings and throughput",
    (".lease.json", ".lease.lock", ".lease.epoch"): "which job is writing the output (host, pid), its lock and "
    "the last lease epoch granted",
    (".s2d-output.json",): "s2d's marker of its own output",
    (".inputs/", ".parts/", ".staging/"): "a job's working files (removed when it completes)",
    ("model/", "train_ray/", "eval/"): "what `s2d train` and `s2d eval` write",
}
CONFIG_OF_TABLE = {"shards": "default", "rejected": "rejected", "quarantine": "quarantine", SAMPLES: SAMPLES}
TABLE_DESCRIPTIONS = {
    "shards": "accepted inputs: `prompt` (the direct prompt) and `answer` (the self-consistent final answer) are "
    "the fine-tuning pair; `votes`, `num_samples`, `agreement`, `system2_tokens` (mean generated "
    "tokens per sample, reasoning included)",
    "rejected": "inputs the consistency criterion rejected: `criterion`, `reason`, `detail`, `answer_counts`",
    "quarantine": "input rows that could not be used: `reason`, `detail`, `source_row`, a bounded `raw` preview",
    SAMPLES: "every System 2 sample of every generated input: `variant`, `sample`, `steps` (each step's text), "
    "`extracted` and `answer` (normalised: what the vote counted), `tokens`",
}


def s2d_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("s2d")
    except PackageNotFoundError:
        return "unknown"


def card_text(spec: JobSpec, manifest: Manifest, reasons: dict[str, Counter], when: datetime.datetime) -> str:
    from s2d.engine.core.methods import resolve_method

    tables = [kind for kind in KINDS] + ([SAMPLES] if manifest.keep_samples else [])
    header = {
        "pretty_name": f"s2d {spec.method.name} distillation of {spec.model} on {spec.task.name}",
        "tags": ["s2d", "system-2-distillation", "synthetic", "self-consistency"],
        "configs": [
            {
                "config_name": CONFIG_OF_TABLE[kind],
                **({"default": True} if kind == "shards" else {}),
                "data_files": [{"split": "train", "path": f"{kind}/{SHARD_FILES}"}],
            }
            for kind in tables
        ],
    }
    counts = manifest.counts
    method = resolve_method(spec.method.model_dump())
    source = (
        f"the file `{spec.data.path}` (columns {spec.data.columns.model_dump(exclude_none=True)})"
        if spec.data.path
        else f"the built-in `{spec.task.name}` generator ({spec.task.num_inputs} inputs, seed {spec.task.seed})"
    )
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {header['pretty_name']}",
        "",
        f"System 2 distillation data made by s2d {s2d_version()} on "
        f"{when:%Y-%m-%d %H:%M} UTC: the System 2 method `{spec.method.name}` was sampled "
        f"{spec.sampling.n} times per input with `{spec.model}`, and an input was kept when its final answers "
        f"were self-consistent (criterion `{spec.curate.rule}`). The kept *prompt -> answer* pairs teach the "
        + (f"student `{spec.student}` (`train.model`)" if spec.has_student else "model")
        + " to answer directly, without the reasoning.",
        "",
        "## Counts",
        "",
        f"{manifest.num_inputs} inputs from {source}: **{counts.accepted} accepted**, "
        f"{counts.rejected} rejected, {counts.quarantined} quarantined"
        + (f"; {counts.samples} samples kept" if counts.samples is not None else "")
        + ".",
        "",
    ]
    for kind, by_reason in reasons.items():
        if by_reason:
            lines.append(f"- {kind} by reason: " + ", ".join(f"`{r}` {c}" for r, c in by_reason.most_common()))
    lines += ["", "## Tables", "", "| config | folder | rows |", "|---|---|---|"]
    lines += [f"| `{CONFIG_OF_TABLE[kind]}` | `{kind}/` | {_rows(counts, kind)} |" for kind in tables]
    lines += [""] + [f"- `{kind}/`: {TABLE_DESCRIPTIONS[kind]}" for kind in tables]
    lines += [
        "",
        "## How it was made",
        "",
        f"- model: `{spec.model}`; spec fingerprint `{manifest.fingerprint}` "
        f"({manifest.num_shards} shards, committed exactly once; `s2d status` checks it)",
        *(
            [f"- student (the model `s2d train` fine-tunes on these pairs): `{spec.student}`"]
            if spec.has_student
            else []
        ),
        f"- sampling: `{spec.sampling.model_dump()}`",
        f"- criterion: `{spec.curate.model_dump(exclude_none=True)}`",
        f"- answer extractor: `{spec.method.extractor.model_dump(exclude_none=True)}`",
        f"- method `{method.name}`, one LLM call per prompt step (the first is sampled n times):",
        "",
    ]
    for step in method.steps:
        body = step.prompt if step.prompt is not None else f"(computed without an LLM call: {step.compute})"
        lines += [
            f"  - step `{step.name}`" + (" (one call per item)" if step.for_each else "") + ":",
            "",
            "    ```jinja",
            *[f"    {line}" for line in body.splitlines()],
            "    ```",
            "",
        ]
    lines += [
        "## Use",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'pairs = load_dataset("{spec.out}", split="train")            # accepted: prompt -> answer',
        f'rejected = load_dataset("{spec.out}", "rejected", split="train")',
        *([f'samples = load_dataset("{spec.out}", "samples", split="train")'] if SAMPLES in tables else []),
        "```",
        "",
        f"`s2d export {spec.out} --format messages --to pairs.jsonl` writes the pairs `s2d train` trains on as "
        "chat `messages` (JSON Lines), the format TRL's `SFTTrainer`, axolotl, LLaMA-Factory and torchtune read; "
        f"`s2d inspect {spec.out}` shows inputs with their samples and why each was kept or dropped.",
        "",
        *_files_section(tables),
    ]
    return "\n".join(lines)


def _files_section(tables: list[str]) -> list[str]:
    """Which files are the data set and which are private to the run, and an upload of the former only."""
    public = [CARD, "manifest.json"] + [f"{kind}/{SHARD_FILES}" for kind in tables]
    return [
        "## Files",
        "",
        f"The data set is this card, the table folders ({', '.join(f'`{kind}/`' for kind in tables)}) and "
        "`manifest.json`, the commit record: each shard's row counts and each file's checksum, which "
        "`s2d status <folder>` verifies a copy against. The rest is private to the run and safe to leave out of "
        "an upload:",
        "",
        *[f"- {', '.join(f'`{name}`' for name in names)}: {what}" for names, what in PRIVATE_FILES.items()],
        "",
        "To upload the data set only:",
        "",
        "```",
        "hf upload <user>/<name> <this folder> . --repo-type dataset \\\n  "
        + " ".join(f'--include "{pattern}"' for pattern in public),
        "```",
        "",
    ]


def _rows(counts: Counts, kind: str) -> int | None:
    """The rows of a table folder (shards/ holds the accepted inputs)."""
    by_folder = {"shards": counts.accepted, "rejected": counts.rejected, "quarantine": counts.quarantined}
    return by_folder[kind] if kind != SAMPLES else counts.samples


def write_card(spec: JobSpec, when: datetime.datetime | None = None) -> str:
    """Write `<out>/README.md` for the committed output of `spec`; returns its path."""
    location = OutputLocation.of(spec.out)
    manifest = read_manifest(location)
    entries = list(manifest.shards.values())
    if entries and all(entry.reasons is not None for entry in entries):  # counted by the workers that wrote them
        reasons = {status: Counter() for kind, (status, _) in KINDS.items() if kind != "shards"}
        for entry in entries:
            for status, counts in entry.reasons.items():
                reasons[status].update(counts)
    else:
        reasons = {
            status: Counter(read_committed(location, kind, columns=["reason"]).column("reason").to_pylist())
            for kind, (status, _) in KINDS.items()
            if kind != "shards"
        }
    when = when or datetime.datetime.now(datetime.UTC)
    location.write_bytes_atomic(card_text(spec, manifest, reasons, when).encode(), CARD)
    return location.path(CARD)
