"""Shards resolved into sources: what a shard is, once, before anything is read.

:func:`resolve` turns a config shard into a :class:`Source`: its kind (``builtin``, ``file``
or ``dataset``: a Hub name or a local dataset folder), its revision, its identity (the part
of the token-cache key that says which documents these are), its token budget, and how its
documents are read. :meth:`Source.check` opens it (the first rows, the text column) and
refuses with one line naming the shard, what went wrong and the fix. :meth:`Source.documents`
streams ``(text, position)`` from a position on (see :mod:`evotui.data.readers`).

Datasets are read with ``datasets.load_dataset(..., streaming=True)``: nothing is downloaded
beyond what the budget needs. Offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``, or the
Hub out of reach) a Hub dataset is read from the local Hugging Face cache instead, at once
rather than after half a minute of retries.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from evotui import __version__
from evotui.data import corpus, readers
from evotui.dsl.run import ShardSpec
from evotui.errors import UserError

SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".parquet")
TEXT_FIELDS = ("text", "content", "code", "document", "article", "body", "story",
               "question+answer")
HUB_FIX = ("download it once on a machine with network (datasets.load_dataset) into the "
           "Hugging Face cache and set HF_DATASETS_OFFLINE=1, or use path: for a local file, "
           "or a builtin corpus (builtin:code, builtin:prose, builtin:math)")
SCRIPT_FIX = ("use revision: refs/convert/parquet (the Hub's parquet conversion of it) or a "
              "local copy through path:")
TRUE = {"1", "ON", "YES", "TRUE"}

Row = dict[str, Any]


@dataclass
class Source:
    """One shard, resolved: ``kind`` is builtin, file or dataset; ``budget`` is its token
    budget (None: the whole source)."""

    where: str  # the config path, e.g. data.shards[0]
    shard: ShardSpec
    kind: str
    revision: str | None = None
    budget: int | None = None
    commit: str | None = None  # the revision's commit on the Hub, once checked online

    @property
    def name(self) -> str:
        """A short human name: builtin:code, path a.jsonl, dataset ag_news (train)."""
        s = self.shard
        if self.kind == "builtin":
            return str(s.name)
        if self.kind == "file":
            return f"path {s.path}"
        extra = ", ".join(x for x in (s.config, s.split) if x)
        at = f" @{self.revision}" if self.revision else ""
        return f"dataset {s.name} ({extra}){at}"

    def identity(self) -> dict[str, Any]:
        """Which documents these are (part of the token-cache key); reads no data."""
        s = self.shard
        if self.kind == "builtin":
            return {"builtin": s.name, "cap": corpus.CAPS[str(s.name)], "corpus": corpus.VERSION,
                    "evotui": __version__, "python": list(sys.version_info[:3])}
        if self.kind == "file":
            p = Path(str(s.path)).expanduser().resolve()
            try:
                st = p.stat()
            except OSError:
                return {"path": str(p), "missing": True}
            return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                    "text_field": s.text_field}
        name = str(s.name)
        folder = Path(name).expanduser()
        if folder.is_dir():  # a local dataset folder: its files' sizes and times
            name = str(folder.resolve())
            files = sorted((str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
                           for f in folder.rglob("*") if f.is_file())
            return {"hub": name, "config": s.config, "split": s.split, "files": files,
                    "text_field": s.text_field}
        return {"hub": name, "config": s.config, "split": s.split,
                "revision": self.commit or self.revision, "text_field": s.text_field}

    def check(self) -> None:
        """Raise :class:`UserError` (one line) unless documents can be read from the source."""
        if self.kind != "builtin":
            self._open(None)

    def documents(self, position: Any = None) -> Documents:
        """The source's documents from ``position`` (None: the start), in a fixed order."""
        return Documents(self, position)

    def fail(self, problem: str) -> UserError:
        return UserError.single(f"{self.name}: {problem}", path=self.where)

    def _open(self, position: Any) -> tuple[readers.Reader, Callable[[Row], str | None]]:
        reader = self._open_file(position) if self.kind == "file" else self._open_dataset(
            position)
        fields = _text_fields(self, reader.columns)
        if isinstance(reader, readers.ParquetReader):
            reader.fields = fields  # only the text columns are read
        if len(fields) == 1:
            return reader, lambda row: row.get(fields[0])
        return reader, lambda row: "\n".join(str(row[f]) for f in fields if row.get(f))

    def _open_file(self, position: Any) -> readers.Reader:
        p = Path(str(self.shard.path)).expanduser()
        if p.suffix.lower() not in SUFFIXES:
            raise self.fail(f"unsupported file type {p.suffix or '(none)'!r}; use one of "
                            f"{', '.join(SUFFIXES)}")
        if not p.is_file():
            raise self.fail(f"no such file; check the path (relative paths are read from "
                            f"{Path.cwd()})")
        if p.stat().st_size == 0:
            raise self.fail("the file is empty")
        try:
            reader = readers.open_file(p, position)
        except Exception as e:  # any reader error means the file cannot be used
            raise self.fail(f"cannot be read as {p.suffix.lstrip('.')}: {_reason(e)}") from None
        if not reader.columns:
            raise self.fail("has no rows")
        return reader

    def _open_dataset(self, position: Any) -> readers.Reader:
        import datasets

        s = self.shard
        local = Path(str(s.name)).expanduser().is_dir()
        offline = False
        try:
            with hub_offline(force=local) as offline:
                if offline and not local:  # read from the Hugging Face cache, as downloaded
                    rows = datasets.load_dataset(s.name, s.config, split=s.split,
                                                 revision=self.revision)
                else:
                    rows = datasets.load_dataset(s.name, s.config, split=s.split,
                                                 revision=self.revision, streaming=True)
                    if not local:
                        self.commit = _commit_of(str(s.name), self.revision)
                columns = _columns(rows)
        except Exception as e:  # offline, unknown name, script, gated, bad config or split
            raise self.fail(_hub_problem(e, offline and not local, s.split, s.config)) from None
        if columns is None:
            raise self.fail("has no rows")
        return readers.StreamReader(rows, columns, position)


class Documents:
    """``(text, position after it)`` from a source; blank documents are skipped.
    ``bytes_read`` and ``total_bytes`` (None: unknown) follow the reader."""

    def __init__(self, source: Source, position: Any) -> None:
        self.source = source
        self.position = position
        self.reader: readers.Reader | None = None
        self._builtin_bytes = 0

    @property
    def bytes_read(self) -> int:
        return self.reader.bytes_read if self.reader else self._builtin_bytes

    @property
    def total_bytes(self) -> int | None:
        return self.reader.total_bytes if self.reader else None

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        src = self.source
        if src.kind == "builtin":
            skip = int(self.position or 0)
            for n, doc in enumerate(corpus.documents(str(src.shard.name)), start=1):
                if n > skip:
                    self._builtin_bytes += len(doc.encode("utf-8"))
                    yield doc, n
            return
        self.reader, get_text = src._open(self.position)
        n = 0  # rows read so far
        it = iter(self.reader)
        while True:
            try:
                row, position = next(it)
            except StopIteration:
                return
            except Exception as e:  # a bad row far into the file
                raise src.fail(f"cannot read row {n + 1}: {_reason(e)}") from None
            n += 1
            text = get_text(row)
            if text and not text.isspace():
                yield text, position


def resolve(shard: ShardSpec, where: str, hf_revision: str | None = None,
            budget: int | None = None) -> Source:
    """The source a config shard names (nothing is opened)."""
    if shard.name in corpus.BUILDERS:
        return Source(where, shard, "builtin", budget=budget)
    if shard.path is not None:
        return Source(where, shard, "file", budget=budget)
    local = Path(str(shard.name)).expanduser().is_dir()
    return Source(where, shard, "dataset", None if local else (shard.revision or hf_revision),
                  budget)


def _hub_problem(e: BaseException, offline: bool, split: str, config: str | None) -> str:
    """What went wrong loading a dataset, and the fix, as one line."""
    text = _reason(e)
    if "scripts are no longer supported" in text or "trust_remote_code" in text:
        return f"needs a loading script, which datasets no longer runs; {SCRIPT_FIX}"
    if "gated" in text:
        if _has_token():
            return ("is gated and your token has no access; ask for it on the dataset's Hub "
                    "page")
        return ("is gated and no Hugging Face token is set; accept its terms on the dataset's "
                "Hub page, then set HF_TOKEN (or run hf auth login)")
    if text.startswith("Bad split"):
        avail = text.partition("Available splits:")[2].strip(" .[]").replace("'", "")
        return f"has no split {split!r}; set split: to one of {avail}"
    if "BuilderConfig" in text and "not found" in text:
        avail = text.partition("Available:")[2].strip(" .[]").replace("'", "")
        return f"has no config {config!r}; set config: to one of {avail}"
    if "Config name is missing" in text:
        avail = text.partition("available configs:")[2].strip(" .[]").replace("'", "")
        avail = avail.split("]")[0]
        return f"needs a config; set config: to one of {avail}"
    if offline and isinstance(e, ConnectionError | FileNotFoundError):
        text = "not in the local Hugging Face cache and the Hub is not reachable"
    return f"cannot be loaded: {text}; {HUB_FIX}"


def _commit_of(name: str, revision: str | None) -> str | None:
    """The commit a branch or tag names now (so the cache of ``main`` is not extended with
    documents of a later commit); None when the Hub does not say."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name, revision=revision).sha
    except Exception:  # noqa: BLE001 - the identity falls back to the revision's name
        return None


def _has_token() -> bool:
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:  # noqa: BLE001 - an unreadable token file is no token
        return False


@functools.cache
def hub_reachable() -> bool:
    """Whether the Hub endpoint answers a TCP connection within 3 s (asked once a process)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy decides; we cannot tell from here
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError:
        return False
    return True


def env_offline() -> bool:
    """Whether offline mode is asked for (HF_HUB_OFFLINE and friends)."""
    return any(os.environ.get(v, "").upper() in TRUE
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextmanager
def hub_offline(force: bool = False) -> Iterator[bool]:
    """Run loads offline (Hugging Face cache only) when ``force`` (local data needs no
    network), when offline mode is asked for, or when the Hub is out of reach: a missing
    dataset then fails at once instead of after half a minute of retries. Yields offline."""
    import datasets.config
    from huggingface_hub import constants

    if datasets.config.HF_HUB_OFFLINE and constants.HF_HUB_OFFLINE:
        yield True
        return
    if not force and not env_offline() and hub_reachable():
        yield False
        return
    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _columns(rows: Any) -> dict[str, bool] | None:
    """Column name -> holds strings; from the features, else from the first row (None: no
    rows)."""
    from datasets import Value

    features = getattr(rows, "features", None)
    if features:
        return {k: isinstance(f, Value) and f.dtype in ("string", "large_string")
                for k, f in features.items()}
    first = next(iter(rows), None)
    if first is None:
        return None
    return {k: isinstance(v, str) for k, v in first.items()}


def _text_fields(src: Source, columns: dict[str, bool]) -> list[str]:
    """The columns a document is made of (text_field, else the first of TEXT_FIELDS found,
    else the only text column)."""
    listed = ", ".join(f"{k} ({'text' if s else 'not text'})" for k, s in columns.items())
    field = src.shard.text_field
    if field is not None:
        fields = field.split("+")
        missing = [f for f in fields if f not in columns]
        if missing:
            raise src.fail(f"has no column {missing[0]!r} (text_field); set text_field: to one "
                           f"of the columns: {listed}")
        bad = [f for f in fields if not columns[f]]
        if bad:
            raise src.fail(f"column {bad[0]!r} (text_field) does not hold text; columns: "
                           f"{listed}")
    else:
        found = [c for c in TEXT_FIELDS if all(columns.get(f) for f in c.split("+"))]
        strings = [k for k, s in columns.items() if s]
        if found:
            fields = found[0].split("+")
        elif len(strings) == 1:
            fields = strings
        else:
            raise src.fail(f"cannot tell which column holds the text; set text_field: "
                           f"(columns: {listed or 'none'})")
    return fields


def _reason(e: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
