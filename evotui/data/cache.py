"""The token cache: a source's documents tokenised once into memory-mapped files, extended on
demand, and read as a prefix cut to a token budget.

A cache holds the first documents of one source, in the source's order, tokenised by one
tokenizer, in three files beside each other in the cache directory:

- ``<key>.bin``: the packed tokens (each document's ids, then the end-of-document id; uint16
  when the vocabulary fits, else uint32);
- ``<key>.idx``: uint64, where each document ends in ``.bin`` (a running total);
- ``<key>.json``: what has been committed (documents, tokens, the reader's position after
  the last document, whether the source is exhausted, bytes read) and what the source was.

The key hashes the source's identity (builtin name and versions / file path, size and mtime /
dataset name, config, split and revision; the text field) with the tokenizer's name and
vocabulary, and a budget's document range is the prefix ``[0, d)``: documents up to the first
one at which the running total reaches the budget. So a run with a larger budget appends the
documents that follow (same order) instead of rebuilding, and any budget the cache covers reads
exactly the tokens a clean build of that budget would hold.

Writing is crash-safe: a batch is appended to ``.bin`` and ``.idx`` (flushed and synced) and
only then committed by rewriting ``.json`` atomically; on the next open anything past the
committed sizes (a batch being written when the process was killed) is cut off and reading
continues from the committed position. A cache that holds fewer tokens than a budget is never
used as complete for it. One process writes a cache at a time (``<key>.lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evotui import atomic
from evotui.data.tokenizers import Tokenizer

FORMAT = 2  # bump when the layout or packing changes
HELDOUT_FRACTION = 0.01  # held-out is at least this share of a stream (or eval_tokens) ...
HELDOUT_MAX = 0.25  # ... aiming at no more than this share ...
TRAIN_MIN = 0.5  # ... and training always keeps more than this share
SUFFIXES = (".bin", ".idx", ".json", ".used", ".lock")


def default_cache_dir() -> Path:
    """``$EVOTUI_CACHE``, else ``~/.cache/evotui/tokens``."""
    return Path(os.environ.get("EVOTUI_CACHE") or "~/.cache/evotui/tokens").expanduser()


def cache_key(identity: dict[str, Any], tokenizer: Tokenizer) -> str:
    """A readable file stem (source, tokenizer) plus a hash of everything the tokens depend on."""
    blob = json.dumps({"format": FORMAT, "source": identity, "tokenizer": tokenizer.name,
                       "vocab": tokenizer.fingerprint}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    src = str(identity.get("builtin") or identity.get("hub") or Path(identity["path"]).name)
    slug = "-".join(re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")[-40:]
                    for s in (src, tokenizer.name))
    return f"{slug}-{digest}"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


@dataclass
class TokenFile:
    """The tokens a budget reads from a cache (memory-mapped), with where its held-out tail
    starts (a document boundary)."""

    key: str
    tokens: np.ndarray
    heldout_start: int
    meta: dict[str, Any]
    docs: int  # documents in ``tokens`` (the budget's range is [0, docs))

    @property
    def train(self) -> np.ndarray:
        return self.tokens[: self.heldout_start]

    @property
    def heldout(self) -> np.ndarray:
        return self.tokens[self.heldout_start :]


class Cache:
    """One source's cache files; :meth:`open` it, :meth:`append` batches, :meth:`view` it."""

    def __init__(self, cache_dir: Path, key: str) -> None:
        self.dir = Path(cache_dir)
        self.key = key
        self.meta: dict[str, Any] = {}

    def path(self, suffix: str) -> Path:
        return self.dir / f"{self.key}{suffix}"

    @property
    def n_tokens(self) -> int:
        return int(self.meta.get("n_tokens", 0))

    @property
    def n_docs(self) -> int:
        return int(self.meta.get("n_docs", 0))

    @property
    def exhausted(self) -> bool:
        return bool(self.meta.get("exhausted"))

    def covers(self, budget: int | None) -> bool:
        """Whether the committed documents hold ``budget`` tokens (None: the whole source)."""
        if self.exhausted:
            return True
        return budget is not None and self.n_tokens >= budget and self.n_docs > 0

    def read_meta(self) -> bool:
        """Load the committed state; False when there is no usable cache."""
        try:
            meta = json.loads(self.path(".json").read_text(encoding="utf-8"))
            ok = meta.get("format") == FORMAT and meta.get("key") == self.key
            itemsize = np.dtype(meta["dtype"]).itemsize
            ok = ok and self.path(".bin").stat().st_size >= meta["n_tokens"] * itemsize
            ok = ok and self.path(".idx").stat().st_size >= meta["n_docs"] * 8
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if ok:
            self.meta = meta
        return ok

    def start(self, source: str, identity: dict[str, Any], tokenizer: Tokenizer) -> None:
        """Open for appending (call under :meth:`locked`): continue the committed state and
        drop anything written after it, or begin empty files."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.read_meta():
            self.meta = {
                "format": FORMAT, "key": self.key, "source": source, "identity": identity,
                "tokenizer": tokenizer.name, "vocab_size": tokenizer.vocab_size,
                "eot": tokenizer.eot, "dtype": token_dtype(tokenizer.vocab_size).name,
                "n_tokens": 0, "n_docs": 0, "position": None, "exhausted": False,
                "bytes_read": 0, "seconds": 0.0, "created": time.time(),
            }
            for suffix in (".bin", ".idx"):
                self.path(suffix).write_bytes(b"")
            self._commit()
        itemsize = np.dtype(self.meta["dtype"]).itemsize
        for suffix, size in ((".bin", self.n_tokens * itemsize), (".idx", self.n_docs * 8)):
            with self.path(suffix).open("r+b") as f:
                f.truncate(size)

    def append(self, ids: np.ndarray, doc_lengths: np.ndarray, position: Any,
               bytes_read: int, seconds: float, exhausted: bool = False) -> None:
        """Append documents (their packed ids and lengths) and commit them: after this
        returns, a kill loses nothing of them."""
        if len(doc_lengths):
            ends = self.n_tokens + np.cumsum(doc_lengths, dtype=np.uint64)
            for suffix, data in ((".bin", ids.astype(self.meta["dtype"])), (".idx", ends)):
                with self.path(suffix).open("ab") as f:
                    f.write(np.ascontiguousarray(data).tobytes())
                    f.flush()
                    os.fsync(f.fileno())
        self.meta.update(n_tokens=self.n_tokens + len(ids), n_docs=self.n_docs + len(doc_lengths),
                         bytes_read=self.meta["bytes_read"] + bytes_read,
                         seconds=round(self.meta["seconds"] + seconds, 3))
        if len(doc_lengths):
            self.meta["position"] = position
        self.meta["exhausted"] = exhausted
        self._commit()

    def _commit(self) -> None:
        atomic.write_text(self.path(".json"), json.dumps(self.meta, indent=1))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held while writing: one writer per cache (another waits for it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.path(".lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def doc_ends(self) -> np.ndarray:
        return _map(self.path(".idx"), np.dtype(np.uint64), self.n_docs)

    def view(self, budget: int | None, eval_tokens: int) -> TokenFile:
        """The budget's tokens: documents up to the first at which the total reaches
        ``budget`` (all committed ones for None), held-out tail split at a document."""
        ends = self.doc_ends()
        docs = self.n_docs
        if budget is not None and self.n_tokens >= budget:
            docs = int(np.searchsorted(ends, budget, side="left")) + 1
        n = int(ends[docs - 1]) if docs else 0
        tokens = _map(self.path(".bin"), np.dtype(self.meta["dtype"]), self.n_tokens)[:n]
        self.path(".used").touch()
        return TokenFile(self.key, tokens, heldout_start(ends[:docs], n, eval_tokens),
                         self.meta, docs)


def heldout_start(ends: np.ndarray, n: int, eval_tokens: int) -> int:
    """Where the held-out tail begins: a document's start, so that the tail holds at least
    max(eval_tokens, 1%) tokens (aiming at no more than a quarter) and training keeps more than
    half. Without such a boundary the stream is split inside a document."""
    want = min(max(eval_tokens, int(n * HELDOUT_FRACTION)), int(n * HELDOUT_MAX))
    if want <= 0:
        return n
    target, floor = n - want, int(n * TRAIN_MIN)
    i = int(np.searchsorted(ends, target, side="right"))  # documents ending at or before
    if i and int(ends[i - 1]) > floor:
        return int(ends[i - 1])
    return target


def entries(cache_dir: Path) -> list[dict[str, Any]]:
    """Every cache in ``cache_dir``: its meta plus ``size`` (bytes on disk) and ``used``
    (last read, epoch seconds)."""
    out = []
    for meta_path in sorted(Path(cache_dir).glob("*.json")):
        c = Cache(cache_dir, meta_path.stem)
        if not c.read_meta():
            continue
        size = sum(c.path(s).stat().st_size for s in SUFFIXES if c.path(s).exists())
        used = c.path(".used").stat().st_mtime if c.path(".used").exists() else None
        out.append({**c.meta, "size": size, "used": used})
    return out


def remove(cache_dir: Path, key: str) -> int:
    """Delete a cache's files (waiting for a writer to finish); the bytes freed."""
    c = Cache(cache_dir, key)
    freed = 0
    with c.locked():
        for suffix in SUFFIXES[:-1]:
            p = c.path(suffix)
            if p.exists():
                freed += p.stat().st_size
                p.unlink()
    c.path(".lock").unlink(missing_ok=True)
    return freed


def _map(path: Path, dtype: np.dtype, n: int) -> np.ndarray:
    if n == 0:  # numpy cannot map an empty file
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))
