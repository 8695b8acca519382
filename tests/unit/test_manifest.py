"""s2d.engine.data.manifest: the manifest's typed model, its one reader and writer, and its published JSON schema."""

import json
from pathlib import Path

import pytest

from s2d.engine.data.manifest import (
    Counts,
    Manifest,
    ShardEntry,
    manifest_schema,
    open_manifest,
    read_manifest,
    write_manifest,
)
from s2d.engine.data.ownership import FORMAT_VERSION, MANIFEST, ForeignOutput
from s2d.engine.data.storage import OutputLocation

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "manifest.schema.json"

# A manifest as the previous s2d wrote it (format 0): the same keys, no format_version; shard 0 from a worker
# (reasons, checksums, job), shard 1 from the driver-side ShardWriter.
FORMAT_0 = {
    "fingerprint": "fp",
    "num_shards": 3,
    "shards": {
        "0": {
            "file": "shard-00000.parquet",
            "accepted": 2,
            "rejected": 1,
            "quarantined": 0,
            "samples": 12,
            "reasons": {"rejected": {"tie": 1}, "quarantined": {}},
            "checksums": {"shards": "00112233aabbccdd", "rejected": "ffeeddcc00112233"},
            "job": "host-12-abc",
        },
        "1": {"file": "shard-00001.parquet", "accepted": 0, "rejected": 0, "quarantined": 1, "samples": 0},
    },
    "num_inputs": 5,
    "samples": True,
    "counts": {"accepted": 2, "rejected": 1, "quarantined": 1, "samples": 12, "committed_shards": 2},
}


def test_a_manifest_round_trips_through_its_file(tmp_path):
    location = OutputLocation.of(tmp_path)
    manifest = Manifest(fingerprint="fp", num_shards=4, num_inputs=7, keep_samples=True)
    manifest.shards[2] = ShardEntry(file="shard-00002.parquet", accepted=3, rejected=1, samples=8, job="j")
    manifest.shards[0] = ShardEntry(
        file="shard-00000.parquet", quarantined=2, samples=0, reasons={"quarantined": {"empty": 2}}
    )
    write_manifest(location, manifest)
    read = read_manifest(tmp_path)
    assert read == manifest and read.format_version == FORMAT_VERSION
    assert read.counts == Counts(accepted=3, rejected=1, quarantined=2, samples=8, committed_shards=2)
    assert list(read.shards) == [0, 2], "shards are written in id order"
    on_disk = json.loads((tmp_path / MANIFEST).read_text())
    assert on_disk["samples"] is True and list(on_disk["shards"]) == ["0", "2"]
    assert "checksums" not in on_disk["shards"]["0"], "a field that does not apply is left out, not null"


def test_a_job_without_samples_writes_no_sample_counts(tmp_path):
    manifest = open_manifest(OutputLocation.of(tmp_path), 1, "fp", 1, force=False, keep_samples=False)
    manifest.shards[0] = ShardEntry(file="shard-00000.parquet", accepted=1)
    write_manifest(OutputLocation.of(tmp_path), manifest)
    on_disk = json.loads((tmp_path / MANIFEST).read_text())
    assert on_disk["counts"] == {"accepted": 1, "rejected": 0, "quarantined": 0, "committed_shards": 1}
    assert on_disk["samples"] is False and "samples" not in on_disk["shards"]["0"]


def test_a_format_0_manifest_reads_and_is_rewritten_as_the_current_format(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps(FORMAT_0))
    manifest = read_manifest(tmp_path)
    assert manifest.format_version == 0 and manifest.keep_samples and manifest.num_inputs == 5
    assert manifest.shards[0].reasons == {"rejected": {"tie": 1}, "quarantined": {}}
    assert manifest.shards[1].inputs == 1 and manifest.shards[1].job is None
    assert manifest.counts == manifest.totals()
    write_manifest(OutputLocation.of(tmp_path), manifest)
    rewritten = json.loads((tmp_path / MANIFEST).read_text())
    assert rewritten == FORMAT_0 | {"format_version": FORMAT_VERSION}, "the same keys, and the version"


def test_an_older_format_0_manifest_without_num_inputs_or_samples_reads(tmp_path):
    oldest = {key: FORMAT_0[key] for key in ("fingerprint", "num_shards", "counts")}
    oldest["shards"] = {"1": FORMAT_0["shards"]["1"]}
    (tmp_path / MANIFEST).write_text(json.dumps(oldest))
    manifest = read_manifest(tmp_path)
    assert manifest.num_inputs == 0 and not manifest.keep_samples and manifest.committed == {1}


def test_a_newer_format_is_refused_with_one_line(tmp_path):
    # A newer s2d may change the manifest's shape too: the version is what the refusal names.
    (tmp_path / MANIFEST).write_text(json.dumps({"format_version": FORMAT_VERSION + 1, "shards": []}))
    with pytest.raises(ForeignOutput, match="newer s2d") as refused:
        read_manifest(tmp_path)
    assert "\n" not in str(refused.value)
    (tmp_path / MANIFEST).write_text(json.dumps(FORMAT_0 | {"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ForeignOutput, match=f"output format {FORMAT_VERSION + 1}"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2]", json.dumps({"fingerprint": "fp", "shards": {}}), json.dumps(FORMAT_0 | {"num_shards": -1})],
)
def test_a_file_that_is_not_an_s2d_manifest_is_refused_with_one_line(tmp_path, content):
    (tmp_path / MANIFEST).write_text(content)
    with pytest.raises(ForeignOutput) as refused:
        read_manifest(tmp_path)
    assert str(refused.value).startswith(str(tmp_path / MANIFEST)) and "\n" not in str(refused.value)


def test_no_manifest_reads_as_none(tmp_path):
    assert read_manifest(tmp_path) is None


def test_the_published_schema_is_the_models():
    assert SCHEMA_FILE.read_text() == manifest_schema(), (
        "docs/manifest.schema.json is stale: python -m s2d.engine.data.manifest > docs/manifest.schema.json"
    )
    schema = json.loads(SCHEMA_FILE.read_text())
    assert set(schema["properties"]) == set(FORMAT_0) | {"format_version"}, "the schema names the file's keys"
    assert set(schema["$defs"]["ShardEntry"]["properties"]) == set(FORMAT_0["shards"]["0"])
