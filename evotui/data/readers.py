"""Rows of a shard, streamed, each with the position just after it, and the bytes read so far.

A :class:`Reader` is the one interface every kind of shard is read through: iterate it for
``(row, position)`` pairs; ``position`` is JSON and ``open(..., position)`` continues right
after that row, so a cache can be extended (or an interrupted build continued) without
reading again what is already tokenised. ``bytes_read`` counts what was read from disk or
the network for this reader.

- local ``.jsonl`` (and ``.json`` holding JSON lines), ``.txt`` (one row per paragraph) and
  ``.csv``: read line by line from a byte offset (the position);
- local ``.parquet``: row group by row group, only the text columns (position: row group,
  row);
- a ``.json`` array: loaded whole (JSON cannot be read in part; position: row index);
- a ``datasets`` stream (Hub names and local dataset folders, ``streaming=True``): rows in
  order, continued with ``skip`` (position: rows read); bytes are what this thread read
  (``/proc/thread-self/io``), which includes the network.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Row = dict[str, Any]


class Reader:
    """Rows with their resume positions; ``columns`` maps column name -> holds text."""

    columns: dict[str, bool]
    bytes_read: int = 0
    total_bytes: int | None = None  # the whole source, when known

    def __iter__(self) -> Iterator[tuple[Row, Any]]:
        raise NotImplementedError


def open_file(path: Path, position: Any = None) -> Reader:
    """A reader for a local file (see the module docstring); ``position`` None: from the start."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return ParquetReader(path, position)
    if suffix == ".csv":
        return CsvReader(path, position)
    if suffix == ".txt":
        return TextReader(path, position)
    if suffix == ".json" and _first_char(path) == "[":
        return JsonArrayReader(path, position)
    return JsonLinesReader(path, position)


def _first_char(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(4096).lstrip()
    return head[:1].decode("ascii", errors="replace")


class _LineReader(Reader):
    """Lines from a byte offset; ``bytes_read`` is how far into the file reading got."""

    def __init__(self, path: Path, position: Any) -> None:
        self.path = path
        self.total_bytes = path.stat().st_size
        self.start = int(position or 0)
        self.bytes_read = 0

    def _lines(self, start: int) -> Iterator[tuple[bytes, int]]:
        """(line, offset after it)."""
        offset = start
        with self.path.open("rb") as f:
            f.seek(start)
            for line in f:
                offset += len(line)
                self.bytes_read = offset - self.start
                yield line, offset


class JsonLinesReader(_LineReader):
    def __init__(self, path: Path, position: Any) -> None:
        super().__init__(path, position)
        first = next((json.loads(line) for line, _ in self._lines(0) if line.strip()), None)
        self.bytes_read = 0
        self.columns = _columns_of(first)

    def __iter__(self) -> Iterator[tuple[Row, Any]]:
        for line, offset in self._lines(self.start):
            if line.strip():
                row = json.loads(line)
                yield (row if isinstance(row, dict) else {"text": row}), offset


class TextReader(_LineReader):
    """One row ``{"text": paragraph}`` per block of lines between blank lines."""

    columns = {"text": True}

    def __iter__(self) -> Iterator[tuple[Row, Any]]:
        para: list[bytes] = []
        for line, offset in self._lines(self.start):
            if line.strip(b"\r\n"):
                para.append(line)
                continue
            if para:
                yield {"text": b"".join(para).decode("utf-8").strip("\r\n")}, offset
                para = []
        if para:
            yield {"text": b"".join(para).decode("utf-8").strip("\r\n")}, self.total_bytes


class CsvReader(_LineReader):
    """A header row, then one row per record; a column holds text unless every value of the
    first rows is a number."""

    def __init__(self, path: Path, position: Any) -> None:
        super().__init__(path, position)
        lines = self._lines(0)
        reader = csv.reader(line.decode("utf-8") for line, _ in lines)
        self.header = next(reader, [])
        self.body = self.bytes_read
        sample = [r for _, r in zip(range(100), reader, strict=False)]
        self.bytes_read = 0
        self.columns = {h: (not sample or any(not _is_number(r[i]) for r in sample
                                              if i < len(r)))
                        for i, h in enumerate(self.header)} if sample else {}
        self.start = max(self.start, self.body)

    def __iter__(self) -> Iterator[tuple[Row, Any]]:
        offset = [self.start]

        def lines() -> Iterator[str]:
            for line, after in self._lines(self.start):
                offset[0] = after
                yield line.decode("utf-8")

        for record in csv.reader(lines()):
            if record:
                yield dict(zip(self.header, record, strict=False)), offset[0]


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return value == ""
    return True


class JsonArrayReader(Reader):
    def __init__(self, path: Path, position: Any) -> None:
        data = json.loads(path.read_bytes())
        self.total_bytes = self.bytes_read = path.stat().st_size
        if isinstance(data, dict):  # {"data": [...]} or {"column": [...], ...}
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]) \
                else [dict(zip(data, vals, strict=False)) for vals in zip(*data.values(),
                                                                            strict=False)]
        self.rows = [r if isinstance(r, dict) else {"text": r} for r in data]
        self.start = int(position or 0)
        self.columns = _columns_of(self.rows[0] if self.rows else None)

    def __iter__(self) -> Iterator[tuple[Row, Any]]:
        for i in range(self.start, len(self.rows)):
            yield self.rows[i], i + 1


class ParquetReader(Reader):
    def __init__(self, path: Path, position: Any) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.file = pq.ParquetFile(path)
        self.total_bytes = path.stat().st_size
        self.columns = {f.name: pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                        for f in self.file.schema_arrow}
        self.start = tuple(position) if position else (0, 0)
        self.fields: list[str] | None = None  # the columns to read (default: all)

    def __iter__(self) -> Iterator[tuple[Row, Any]]:
        meta = self.file.metadata
        group, skip = self.start
        names = self.fields or list(self.columns)
        for g in range(group, meta.num_row_groups):
            rg = meta.row_group(g)
            self.bytes_read += sum(rg.column(c).total_compressed_size
                                   for c in range(rg.num_columns)
                                   if rg.column(c).path_in_schema in names)
            table = self.file.read_row_group(g, columns=names)
            rows = table.to_pylist()
            for i in range(skip if g == group else 0, len(rows)):
                yield rows[i], [g, i + 1]


class StreamReader(Reader):
    """A ``datasets`` IterableDataset (or any iterable of dicts) from a row count on."""

    SAMPLE = 256  # rows between reads of the thread's I/O counter

    def __init__(self, rows: Any, columns: dict[str, bool], position: Any) -> None:
        self.rows = rows
        self.columns = columns
        self.start = int(position or 0)

    def __iter__(self) -> Iterator[tuple[Row, Any]]:
        rows = self.rows
        if self.start:
            rows = rows.skip(self.start) if hasattr(rows, "skip") else _skipped(rows, self.start)
        first = _thread_rchar()
        n = self.start
        for row in rows:
            n += 1
            if first is not None and n % self.SAMPLE == 0:
                self._count(first)
            yield row, n
        if first is not None:
            self._count(first)

    def _count(self, first: tuple[int, int]) -> None:
        now = _thread_rchar()
        if now is not None:  # less what reading the counter itself cost
            self.bytes_read = max(0, now[0] - first[0] - (now[1] - first[1]))


def _skipped(rows: Any, n: int) -> Iterator[Any]:
    it = iter(rows)
    for _ in range(n):
        next(it, None)
    yield from it


_PROBES = [0, 0]  # reads of the counter so far, and their bytes


def _thread_rchar() -> tuple[int, int] | None:
    """(bytes this thread has read through system calls, files and sockets alike; bytes of
    those that were reads of this counter), or None where there is no such counter."""
    try:
        with open("/proc/thread-self/io", "rb") as f:
            data = f.read()
    except OSError:
        return None
    _PROBES[1] += len(data)
    for line in data.splitlines():
        if line.startswith(b"rchar:"):
            return int(line.split()[1]), _PROBES[1]
    return None


def _columns_of(row: Row | None) -> dict[str, bool]:
    if row is None:
        return {}
    return {k: isinstance(v, str) for k, v in row.items()}
