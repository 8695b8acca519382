"""Where a job's output lives: a local path or any pyarrow filesystem URI, with atomic file publication.

Shards are published by writing a temporary file and renaming it. On local and mounted shared
filesystems (NFS, Lustre, a FUSE mount of a bucket) the rename is atomic. Object stores (s3://, gs://)
have no rename: pyarrow copies then deletes, so a file can be seen half-published there; s2d stays
correct because readers only trust files listed in manifest.json, and the manifest itself is the last
file written for each commit (an object PUT is atomic). See README "Output layout".
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class AlteredFile(ValueError):
    """A committed file is not what the manifest says was committed: changed, truncated, swapped or gone."""


class OutputError(OSError):
    """The output location cannot be written (disk full, read-only, not a directory...): a one-line message."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _explain(error: OSError, path: str) -> OutputError:
    code = error.errno or _errno_in_text(str(error))
    reason = os.strerror(code).lower() if code else str(error).splitlines()[0]
    return OutputError(code, f"cannot write {path}: {reason}; committed shards are intact, rerun to resume")


def _errno_in_text(text: str) -> int | None:
    # pyarrow's filesystem errors carry the errno only in their text ("... Detail: [errno 28] ...").
    found = re.search(r"\[errno (\d+)\]", text)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class OutputLocation:
    fs: pafs.FileSystem
    root: str  # filesystem path of <out>, without a trailing slash

    @classmethod
    def of(cls, out: Any) -> OutputLocation:
        """`out` is a local path (relative paths resolve against the cwd), a URI such as file:///x or s3://b/x,
        or already a location."""
        if isinstance(out, OutputLocation):
            return out
        text = str(out)
        if "://" in text:
            fs, root = pafs.FileSystem.from_uri(text)
            return cls(fs, root.rstrip("/"))
        return cls(pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(text)))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def makedirs(self, *parts: str) -> None:
        path = self.path(*parts)
        try:
            self.fs.create_dir(path, recursive=True)
        except OSError as error:
            raise _explain(error, path) from None

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def list_files(self, *parts: str, suffix: str = "") -> list[str]:
        """Base names of the files directly under a folder (none if it does not exist)."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(
            posixpath.basename(info.path)
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File and info.path.endswith(suffix)
        )

    def read_bytes(self, *parts: str) -> bytes | None:
        path = self.path(*parts)
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(path) as stream:
            return stream.read()

    def delete(self, *parts: str) -> None:
        path = self.path(*parts)
        info = self.fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(path)

    def write_bytes_atomic(self, data: bytes, *parts: str) -> None:
        self._publish(parts, lambda tmp: self._write_stream(tmp, data))

    def write_table_atomic(self, table: pa.Table, *parts: str) -> None:
        self._publish(parts, lambda tmp: _write_parquet(table, tmp, self.fs))

    def write_table_checksummed(self, table: pa.Table, *parts: str) -> str:
        """Publish `table` as a Parquet file (atomically); returns the checksum of the bytes written, for the
        manifest: the one way a committed table file is written, by the workers and the driver-side writer alike."""
        data = parquet_bytes(table)
        self.write_bytes_atomic(data, *parts)
        return checksum(data)

    def read_table(self, *parts: str, schema: pa.Schema | None = None) -> pa.Table:
        return pq.read_table(self.path(*parts), filesystem=self.fs, schema=schema)

    def read_table_verified(
        self, *parts: str, schema: pa.Schema | None = None, sha: str | None = None, rows: int | None = None
    ) -> pa.Table:
        """A committed Parquet file, checked before its rows are handed on: its bytes are read once, hashed against
        `sha` (the manifest's checksum, when it has one) and parsed from memory (no second read), and its rows are
        counted against `rows`. Raises AlteredFile, one line naming the file and why."""
        path = self.path(*parts)
        try:
            data = self.read_bytes(*parts)
        except OSError as error:
            raise AlteredFile(f"{path}: unreadable ({_first_line(error)})") from None
        if data is None:
            raise AlteredFile(f"{path}: missing, but committed in manifest.json")
        if sha is not None and (found := checksum(data)) != sha:
            raise AlteredFile(
                f"{path}: checksum {found} is not the {sha} committed in manifest.json: the file changed "
                "after it was committed (rewritten, truncated or swapped); restore it, or regenerate the output"
            )
        try:
            in_file = pq.read_metadata(pa.BufferReader(data)).num_rows
            table = pq.read_table(pa.BufferReader(data), schema=schema)
        except (pa.ArrowException, OSError) as error:
            raise AlteredFile(f"{path}: not a readable Parquet file ({_first_line(error)})") from None
        if rows is not None and in_file != rows:
            raise AlteredFile(f"{path}: {in_file} rows, but {rows} committed in manifest.json")
        return table

    def _write_stream(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)

    def _publish(self, parts: tuple[str, ...], write) -> None:
        final = self.path(*parts)
        # Dot-prefixed so that readers globbing a folder (pq.read_table(folder)) skip it.
        tmp = posixpath.join(posixpath.dirname(final), f".{posixpath.basename(final)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            write(tmp)
            if self.is_local:
                _fsync_file(tmp)
            self.fs.move(tmp, final)
        except OSError as error:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            raise _explain(error, final) from None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _fsync_file(path: str) -> None:
    # Durable before the rename makes it visible: a power cut must not publish an empty file.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checksum(data: bytes) -> str:
    """What the manifest records of a committed file: the first 16 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as the bytes of a Parquet file (to checksum what is written)."""
    sink = pa.BufferOutputStream()
    if table.num_rows:
        pq.write_table(table, sink)
    else:
        with pq.ParquetWriter(sink, table.schema):  # no row group: see _write_parquet
            pass
    return sink.getvalue().to_pybytes()


def _write_parquet(table: pa.Table, path: str, fs) -> None:
    if table.num_rows:
        pq.write_table(table, path, filesystem=fs)
        return
    # An empty table as a file with its schema and no row group: `pq.write_table` writes one empty row group,
    # which Hugging Face datasets' Parquet reader refuses ("BatchSize must be greater than 0").
    with pq.ParquetWriter(path, table.schema, filesystem=fs):
        pass
