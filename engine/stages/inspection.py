"""`s2d inspect`: a few committed inputs with their samples, votes and why each was kept or dropped, as text.

Reads shard by shard through the manifest and stops once it has enough inputs, so it is as quick on a job
of millions of inputs as on the demo; an input's samples come from its own shard's samples file.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from s2d.engine.data.accounting import check_accounting
from s2d.engine.data.manifest import Manifest, read_manifest
from s2d.engine.data.samples import SAMPLES
from s2d.engine.data.shards import KINDS, TABLE_SCHEMAS, read_committed, read_committed_file, shard_of
from s2d.engine.data.storage import OutputLocation

LINE_CHARS = 160  # each step's text is cut to this many characters unless --full


@dataclass(frozen=True)
class Selection:
    kinds: tuple[str, ...] = ("shards", "rejected")  # which tables to show inputs of
    reason: str | None = None
    input_id: str | None = None
    limit: int = 2  # inputs per table
    full: bool = False


def inspect_output(out: str, selection: Selection) -> str:
    manifest = read_manifest(out)
    if manifest is None:
        raise FileNotFoundError(f"{out} has no manifest.json: not the output of `s2d generate`")
    lines = [_summary(out)]
    found = 0
    for kind in selection.kinds:
        for row in _rows(out, manifest, kind, selection):
            samples = _samples_of(out, manifest, row) if manifest.keep_samples and kind != "quarantine" else None
            lines += ["", *_describe(kind, row, samples, selection.full)]
            found += 1
    if not found:
        wanted = (
            f"input {selection.input_id!r}"
            if selection.input_id
            else f"{' or '.join(selection.kinds)} inputs"
            + (f" with reason {selection.reason!r}" if selection.reason else "")
        )
        lines += ["", f"no committed {wanted} in {out}"]
    elif not manifest.keep_samples:
        lines += ["", "(this job kept no samples: output.keep_samples was false)"]
    return "\n".join(lines)


def _summary(out: str) -> str:
    accounting = check_accounting(out)
    counts = accounting.counts
    reasons = Counter(read_committed(out, "rejected", columns=["reason"]).column("reason").to_pylist())
    by_reason = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
    samples = f"; {accounting.samples} samples" if accounting.samples is not None else ""
    return (
        f"{out}: {accounting.num_inputs} inputs, {counts['accepted']} accepted, {counts['rejected']} rejected"
        + (f" ({by_reason})" if by_reason else "")
        + f", {counts['quarantined']} quarantined{samples}; "
        f"{accounting.committed_shards}/{accounting.total_shards} shards committed"
    )


def _rows(out: str, manifest: Manifest, kind: str, selection: Selection) -> Iterator[dict[str, Any]]:
    """The first `limit` committed rows of `kind` that match, reading one shard file at a time."""
    if selection.input_id is not None:
        shards = [shard_of(selection.input_id, manifest.num_shards)]
    else:
        shards = list(manifest.shards)
    shown = 0
    location = OutputLocation.of(out)
    for shard in shards:
        entry = manifest.shards.get(shard)
        if entry is None:  # the input's shard is not committed yet
            continue
        for row in read_committed_file(location, kind, entry, TABLE_SCHEMAS[kind]).to_pylist():
            if selection.input_id is not None and row["input_id"] != selection.input_id:
                continue
            if selection.reason is not None and row.get("reason") != selection.reason:
                continue
            yield row
            shown += 1
            if shown >= selection.limit:
                return


def _samples_of(out: str, manifest: Manifest, row: dict[str, Any]) -> list[dict[str, Any]]:
    entry = manifest.shards[row["shard_id"]]
    table = read_committed_file(OutputLocation.of(out), SAMPLES, entry, TABLE_SCHEMAS[SAMPLES])
    return [sample for sample in table.to_pylist() if sample["input_id"] == row["input_id"]]


def _describe(kind: str, row: dict[str, Any], samples: list[dict[str, Any]] | None, full: bool) -> list[str]:
    status = KINDS[kind][0]
    lines = [
        f"== {status} {row['input_id']} (shard {row['shard_id']}) ==",
        *_block("prompt", row.get("prompt") or row.get("raw") or "", full),
    ]
    if kind == "quarantine":
        where = f" at source row {row['source_row']}" if row.get("source_row") is not None else ""
        return lines + [f"quarantined{where}: {row['reason']}: {row['detail']}"]
    if samples:
        counted = Counter(sample["answer"] for sample in samples)
        counts = ", ".join(
            f"'{answer}' x{votes}" if answer is not None else f"no answer x{votes}"
            for answer, votes in counted.most_common()
        )
    else:  # the criterion's own counts (rejected rows carry them)
        counts = ", ".join(f"'{entry['answer']}' x{entry['votes']}" for entry in row.get("answer_counts") or [])
    if kind == "shards":
        lines.append(
            f"kept: '{row['answer']}' has {row['votes']}/{row['num_samples']} votes ({row['agreement']:.0%} agreement)"
        )
    else:
        lines.append(
            f"dropped by {row['criterion']}: {row['reason']}" + (f" - {row['detail']}" if row["detail"] else "")
        )
    lines.append(f"answers: {counts or 'none parseable'}; {row['system2_tokens']:.0f} tokens per sample")
    for sample in samples or []:
        variant = f"variant {sample['variant']} " if sample["variant"] is not None else ""
        answer = f"'{sample['answer']}'" if sample["answer"] is not None else "no answer"
        extracted = (
            f" (extracted {sample['extracted']!r})" if sample["extracted"] not in (None, sample["answer"]) else ""
        )
        lines.append(f"  {variant}sample {sample['sample']}: {answer}{extracted}, {sample['tokens']} tokens")
        for step in sample["steps"]:
            name = step["name"] + (f"[{step['item']}]" if step["item"] is not None else "")
            lines += ["    " + line for line in _block(name, step["text"], full)]
    return lines


def _block(label: str, text: str, full: bool) -> list[str]:
    """`label: text` on one line (cut to LINE_CHARS), or wrapped in full."""
    flat = " ".join(text.split())
    if not full:
        cut = flat if len(flat) <= LINE_CHARS else flat[: LINE_CHARS - 3] + "..."
        return [f"{label}: {cut}"]
    return [f"{label}:"] + ["  " + line for part in text.splitlines() for line in (textwrap.wrap(part, 100) or [""])]
