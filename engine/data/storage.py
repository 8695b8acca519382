"""Where a job's output lives: a local path or any pyarrow filesystem URI, with atomic file publication.

Shards are published by writing a temporary file and renaming it. On local and mounted shared
filesystems (NFS, Lustre, a FUSE mount of a bucket) the rename is atomic. Object stores (s3://, gs://)
have no rename: pyarrow copies then deletes, so a file can be seen half-published there; s2d stays
correct because readers only trust files listed in manifest.json, and the manifest itself is the last
file written for each commit (an object PUT is atomic). See README "Output layout".
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


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

    def read_table(self, *parts: str, schema: pa.Schema | None = None) -> pa.Table:
        return pq.read_table(self.path(*parts), filesystem=self.fs, schema=schema)

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


def _fsync_file(path: str) -> None:
    # Durable before the rename makes it visible: a power cut must not publish an empty file.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
