"""Documents from a shard: a builtin corpus, a local file, or a Hugging Face dataset.

Local files are read with the ``datasets`` packaged builders, streamed (no Arrow copy):
``.txt`` gives one document per paragraph (blocks separated by a blank line), ``.jsonl`` /
``.json`` / ``.csv`` / ``.parquet`` one document per row. Hub datasets load through the
local Hugging Face cache; when the Hub cannot be reached they load offline at once instead of
retrying for half a minute. Every failure is a one-line :class:`UserError` naming the shard.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from evotui import __version__
from evotui.data import corpus
from evotui.dsl.run import ShardSpec
from evotui.errors import UserError

BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv",
            ".parquet": "parquet"}
TEXT_FIELDS = ("text", "content", "code", "document", "article", "body", "story",
               "question+answer")
HUB_FIX = ("download it once on a machine with network (datasets.load_dataset) into the "
           "Hugging Face cache and set HF_DATASETS_OFFLINE=1, or use path: for a local file, "
           "or a builtin corpus (builtin:code, builtin:prose, builtin:math)")
TRUE = {"1", "ON", "YES", "TRUE"}

Row = dict[str, Any]


def describe(shard: ShardSpec) -> str:
    """A short human name for a shard's source."""
    if shard.path is not None:
        return f"path {shard.path}"
    if shard.name in corpus.BUILDERS:
        return str(shard.name)
    extra = ", ".join(x for x in (shard.config, shard.split) if x)
    return f"dataset {shard.name} ({extra})"


def identity(shard: ShardSpec, hf_revision: str | None) -> dict[str, Any]:
    """What the documents depend on (part of the token-cache key). Cheap: reads no data."""
    if shard.name in corpus.BUILDERS:
        return {"builtin": shard.name, "cap": corpus.CAPS[shard.name], "corpus": corpus.VERSION,
                "evotui": __version__, "python": list(sys.version_info[:3])}
    if shard.path is not None:
        p = Path(shard.path).expanduser().resolve()
        try:
            st = p.stat()
        except OSError:
            return {"path": str(p), "missing": True}
        return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "text_field": shard.text_field}
    return {"hub": shard.name, "config": shard.config, "split": shard.split,
            "revision": shard.revision or hf_revision, "text_field": shard.text_field}


def check_loadable(shard: ShardSpec, shard_path: str, hf_revision: str | None) -> None:
    """Raise :class:`UserError` (one line) unless the shard's documents can be read."""
    if shard.name in corpus.BUILDERS:
        return
    _open(shard, shard_path, hf_revision)


def iter_documents(shard: ShardSpec, shard_path: str, hf_revision: str | None) -> Iterator[str]:
    """The shard's documents in a fixed order; empty or blank ones are skipped."""
    if shard.name in corpus.BUILDERS:
        yield from corpus.documents(shard.name)
        return
    rows, get_text = _open(shard, shard_path, hf_revision)
    n = 0  # rows read so far
    try:
        for row in rows:
            n += 1
            text = get_text(row)
            if text and not text.isspace():
                yield text
    except Exception as e:  # a bad row far into the file
        raise UserError.single(f"{describe(shard)}: cannot read row {n + 1}: {_reason(e)}",
                               path=shard_path) from None


def _open(shard: ShardSpec, shard_path: str,
          hf_revision: str | None) -> tuple[Any, Callable[[Row], str | None]]:
    """The rows of a shard (an iterable of dicts) and how to get a row's text."""
    if shard.path is None:
        rows, columns = _open_hub(shard, shard_path, shard.revision or hf_revision)
        return rows, _text_getter(shard, shard_path, columns)
    rows, columns = _open_local(shard, shard_path)
    get_text = _text_getter(shard, shard_path, columns)
    if Path(shard.path).suffix.lower() == ".txt":  # paragraphs: drop the blank lines around
        return rows, lambda row: (get_text(row) or "").strip("\n")
    return rows, get_text


def _open_local(shard: ShardSpec, shard_path: str) -> tuple[Any, dict[str, bool]]:
    assert shard.path is not None
    p = Path(shard.path).expanduser()
    where = f"path {shard.path}"
    builder = BUILDERS.get(p.suffix.lower())
    if builder is None:
        raise UserError.single(f"{where}: unsupported file type {p.suffix or '(none)'!r}; use "
                               f"one of {', '.join(BUILDERS)}", path=shard_path)
    if not p.is_file():
        raise UserError.single(f"{where}: no such file; check the path (relative paths are "
                               f"read from {Path.cwd()})", path=shard_path)
    if p.stat().st_size == 0:
        raise UserError.single(f"{where}: the file is empty", path=shard_path)
    import datasets

    kwargs = {"sample_by": "paragraph"} if builder == "text" else {}
    try:
        with hub_offline(force=True):
            rows = datasets.load_dataset(builder, data_files=str(p), split="train",
                                         streaming=True, cache_dir=_scratch(), **kwargs)
            columns = _columns(rows)
    except Exception as e:  # any reader error means the file cannot be used
        raise UserError.single(f"{where}: cannot be read as {builder}: {_reason(e)}",
                               path=shard_path) from None
    if columns is None:
        raise UserError.single(f"{where}: has no rows", path=shard_path)
    return rows, columns


@functools.cache
def _scratch() -> str:
    """A folder for what ``datasets`` writes when streaming a local file (lock files): kept
    out of the Hugging Face cache, removed when the process ends."""
    path = tempfile.mkdtemp(prefix="evotui-datasets-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def _hub_reachable() -> bool:
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


def _env_offline() -> bool:
    return any(os.environ.get(v, "").upper() in TRUE
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextmanager
def hub_offline(force: bool = False) -> Iterator[bool]:
    """Run loads offline (Hugging Face cache only) when ``force`` (local files need no
    network), when offline mode is asked for, or when the Hub is out of reach: a missing
    dataset then fails at once instead of after half a minute of retries. Yields offline."""
    import datasets.config
    from huggingface_hub import constants

    if datasets.config.HF_HUB_OFFLINE and constants.HF_HUB_OFFLINE:
        yield True
        return
    if not force and not _env_offline() and _hub_reachable():
        yield False
        return
    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


_HUB: dict[tuple[str, str | None, str, str | None], Any] = {}


def _open_hub(shard: ShardSpec, shard_path: str,
              revision: str | None) -> tuple[Any, dict[str, bool]]:
    assert shard.name is not None
    key = (shard.name, shard.config, shard.split, revision)
    if key not in _HUB:
        import datasets

        offline = False
        try:
            with hub_offline() as offline:
                _HUB[key] = datasets.load_dataset(shard.name, shard.config, split=shard.split,
                                                  revision=revision)
        except Exception as e:  # offline, unknown name, bad config or split
            state = ("not in the local Hugging Face cache and the Hub is not reachable"
                     if offline and isinstance(e, ConnectionError | FileNotFoundError)
                     else _reason(e))
            raise UserError.single(f"{describe(shard)} cannot be loaded: {state}; {HUB_FIX}",
                                   path=shard_path) from None
    ds = _HUB[key]
    return ds, _columns(ds) or {}


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


def _text_getter(shard: ShardSpec, shard_path: str,
                 columns: dict[str, bool]) -> Callable[[Row], str | None]:
    listed = ", ".join(f"{k} ({'text' if s else 'not text'})" for k, s in columns.items())
    if shard.text_field is not None:
        fields = shard.text_field.split("+")
        missing = [f for f in fields if f not in columns]
        if missing:
            raise UserError.single(f"{describe(shard)} has no column {missing[0]!r} "
                                   f"(text_field); columns: {listed}", path=shard_path)
        bad = [f for f in fields if not columns[f]]
        if bad:
            raise UserError.single(f"{describe(shard)}: column {bad[0]!r} (text_field) does not "
                                   f"hold text; columns: {listed}", path=shard_path)
    else:
        found = [c for c in TEXT_FIELDS if all(columns.get(f) for f in c.split("+"))]
        strings = [k for k, s in columns.items() if s]
        if found:
            fields = found[0].split("+")
        elif len(strings) == 1:
            fields = strings
        else:
            raise UserError.single(f"{describe(shard)}: cannot tell which column holds the text; "
                                   f"set text_field: (columns: {listed or 'none'})",
                                   path=shard_path)
    if len(fields) == 1:
        return lambda row: row.get(fields[0])
    return lambda row: "\n".join(str(row[f]) for f in fields if row.get(f))


def _reason(e: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
