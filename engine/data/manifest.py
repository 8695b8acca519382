"""`<out>/manifest.json`, the commit record of an output, as a typed model; the one module that reads and writes it.

A shard is committed when the manifest lists it, and the manifest is rewritten whole, atomically, at each commit
(s2d.engine.data.commits, the driver; `ShardWriter`, in one process). Every reader goes through `read_manifest`
and reads attributes; `docs/manifest.schema.json` is `manifest_schema()` (a unit test keeps them equal; regenerate
it with `python -m s2d.engine.data.manifest > docs/manifest.schema.json`).

The JSON keeps the keys of the manifests written before the format version was recorded (format 0: the same keys,
no `format_version`), which still read and resume; one written by a newer s2d is refused with one line
(s2d.engine.data.ownership owns the version and the check). A field that does not apply is left out of the file
(`samples` when the job keeps none; `reasons` and `job` of a shard the driver-side writer wrote; `checksums` of a
shard committed before every writer recorded them, whose files are then verified by their row counts only).

A shard's `file` is its own name, `shard-NNNNN.parquet` of its id, and nothing else: a manifest naming a path, `..`
or another shard's file is refused with one line, so no reader is sent outside `<out>` or to the wrong shard.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.json_schema import SkipJsonSchema

from s2d.engine.data.ownership import FORMAT_VERSION, MANIFEST, ForeignOutput, check_format, claim_output
from s2d.engine.data.storage import OutputLocation


class OutputConflict(RuntimeError):
    """<out> holds the output of a different job spec."""


Count = Annotated[int, Field(ge=0)]
SHARD_FILE_PATTERN = r"^shard-[0-9]{5,}\.parquet$"
Absent = SkipJsonSchema[None]  # a field that does not apply is left out of the file, never written as null


def _optional(description: str) -> Any:
    """A field the file may leave out (None here): the schema shows it optional, not nullable."""
    return Field(None, description=description, json_schema_extra=lambda schema: schema.pop("default", None))


def shard_name(shard_id: int) -> str:
    """A shard's file name, the same in each table folder: the only name its manifest entry may give."""
    return f"shard-{shard_id:05d}.parquet"


class ShardEntry(BaseModel):
    """One committed shard: its file in each table folder, what it holds and who wrote it."""

    model_config = ConfigDict(frozen=True)

    file: str = Field(
        pattern=SHARD_FILE_PATTERN,
        description="The shard's file name (shard-NNNNN.parquet of its id, never a path), the same in each table "
        "folder: shards/, rejected/, quarantine/ and, when the job keeps samples, samples/.",
    )
    accepted: Count = Field(0, description="Inputs in shards/: accepted by the consistency criterion.")
    rejected: Count = Field(0, description="Inputs in rejected/: rejected by the consistency criterion.")
    quarantined: Count = Field(0, description="Inputs in quarantine/: rows that could not be used.")
    samples: Count | Absent = _optional("Rows in samples/ (every System 2 sample); absent when the job keeps none.")
    reasons: dict[str, dict[str, Count]] | Absent = _optional(
        "Why inputs were not accepted: status (rejected, quarantined) -> reason -> inputs. Counted by the worker "
        "that wrote the shard; absent when the driver-side ShardWriter wrote it."
    )
    checksums: dict[str, str] | Absent = _optional(
        "Table folder -> the first 16 hex digits of the SHA-256 of the shard's file there, as written; `s2d status` "
        "and every reader check the file against it. Absent in shards committed before every writer recorded it: "
        "their files are checked by row count only."
    )
    job: str | Absent = _optional("The lease owner (the job) that wrote the shard.")

    @property
    def inputs(self) -> int:
        """The shard's inputs, whatever their fate."""
        return self.accepted + self.rejected + self.quarantined


class Counts(BaseModel):
    """The sums of the committed shards' entries, recomputed at each commit."""

    accepted: Count = Field(0, description="Accepted inputs in all committed shards.")
    rejected: Count = Field(0, description="Rejected inputs in all committed shards.")
    quarantined: Count = Field(0, description="Quarantined inputs in all committed shards.")
    samples: Count | Absent = _optional("Sample rows in all committed shards; absent when the job keeps none.")
    committed_shards: Count = Field(0, description="Shards committed so far (of num_shards).")


class Manifest(BaseModel):
    """The commit record of an output: the job it belongs to and every committed shard."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    format_version: Count = Field(
        0,
        description="The version of the output's layout it was written with (s2d.engine.data.ownership); 0: written "
        "before the version was recorded. A reader refuses a version newer than its own.",
    )
    fingerprint: str = Field(
        description="Hash of the job spec's generation-relevant fields: a job with another fingerprint may not "
        "resume this output (unless forced, which discards it)."
    )
    num_shards: int = Field(ge=1, description="Shards the inputs are partitioned into (by a hash of input_id).")
    num_inputs: int = Field(0, description="Inputs of the job: the committed shards' inputs sum to it.")
    keep_samples: bool = Field(
        False, alias="samples", description="Whether the job keeps every System 2 sample in samples/."
    )
    shards: dict[int, ShardEntry] = Field(
        default_factory=dict,
        description="Committed shards, by shard id: a shard is committed once it is listed.",
        json_schema_extra={"propertyNames": {"pattern": "^[0-9]+$"}},
    )
    counts: Counts = Field(default_factory=Counts, description="The sums of the shards' entries.")

    @field_validator("shards")
    @classmethod
    def _each_shard_names_its_own_file(cls, shards: dict[int, ShardEntry], info: ValidationInfo):
        """A reader opens `<out>/<table>/<file>`: a file that is not the shard's own name (a path, `..`, another
        shard's file) would send it outside the output or to the wrong rows."""
        num_shards = info.data.get("num_shards")
        for shard, entry in shards.items():
            if num_shards is not None and not 0 <= shard < num_shards:
                raise ValueError(f"shard {shard} is not one of the output's {num_shards} shards")
            if entry.file != shard_name(shard):
                raise ValueError(f"shard {shard} names the file {entry.file!r}, not its own {shard_name(shard)}")
        return shards

    @property
    def committed(self) -> set[int]:
        """The ids of the committed shards."""
        return set(self.shards)

    def totals(self) -> Counts:
        """The sums of the shard entries (what `counts` holds once written)."""
        accepted = rejected = quarantined = samples = 0
        for entry in self.shards.values():
            accepted += entry.accepted
            rejected += entry.rejected
            quarantined += entry.quarantined
            samples += entry.samples or 0
        return Counts.model_construct(
            accepted=accepted,
            rejected=rejected,
            quarantined=quarantined,
            samples=samples if self.keep_samples else None,
            committed_shards=len(self.shards),
        )


def read_manifest(out: Any) -> Manifest | None:
    """The manifest of `out`, or None when it has none. Raises ForeignOutput when the file is not an s2d manifest
    or was written by a newer s2d."""
    location = OutputLocation.of(out)
    data = location.read_bytes(MANIFEST)
    if data is None:
        return None
    where = location.path(MANIFEST)
    try:
        manifest = Manifest.model_validate_json(data)  # parsed and checked in one pass: the fast path
    except ValidationError as error:
        _refuse(data, error, where)
    check_format(manifest.format_version, where)
    return manifest


def _refuse(data: bytes, error: ValidationError, where: str) -> None:
    """Why a manifest does not read, in one line: a newer s2d's layout is refused as such, before its shape."""
    try:
        raw = json.loads(data)
    except ValueError as parse_error:
        raise ForeignOutput(f"{where}: unreadable manifest ({parse_error})") from None
    if isinstance(raw, dict):
        check_format(raw.get("format_version", 0), where)
    problem = error.errors()[0]
    field = ".".join(str(part) for part in problem["loc"]) or "the file"
    raise ForeignOutput(f"{where}: not an s2d manifest ({field}: {problem['msg']})") from None


def write_manifest(location: OutputLocation, manifest: Manifest) -> None:
    """Rewrite manifest.json (atomically): the commit point of every shard it lists. Sets its counts and format
    version, and orders its shards by id."""
    manifest.counts = manifest.totals()
    manifest.format_version = FORMAT_VERSION
    manifest.shards = dict(sorted(manifest.shards.items()))
    location.write_bytes_atomic(manifest.model_dump_json(exclude_none=True).encode(), MANIFEST)


def open_manifest(
    location: OutputLocation, num_shards: int, fingerprint: str, num_inputs: int, force: bool, keep_samples: bool
) -> Manifest:
    """The manifest of `<out>` for this job, written: refused when `<out>` is not s2d's (ownership.claim_output), or
    when it holds another job's output (unless `force`, which starts it afresh). The files no commit owns are the
    tables' business (s2d.engine.data.shards.open_output)."""
    claim_output(location)
    manifest = read_manifest(location)
    if manifest and not force and (manifest.fingerprint != fingerprint or manifest.num_shards != num_shards):
        raise OutputConflict(
            f"{location.root} holds output of a different job spec (fingerprint {manifest.fingerprint}, "
            f"this job {fingerprint}); choose another `out` or pass --force to discard it"
        )
    if not manifest or force:
        manifest = Manifest(fingerprint=fingerprint, num_shards=num_shards)
    manifest.num_inputs = num_inputs
    manifest.keep_samples = keep_samples  # the fingerprint covers it: a resumed job keeps the same tables
    write_manifest(location, manifest)
    return manifest


def manifest_schema() -> str:
    """The manifest's JSON schema, as docs/manifest.schema.json holds it."""
    return json.dumps(Manifest.model_json_schema(), indent=2) + "\n"


if __name__ == "__main__":
    print(manifest_schema(), end="")
