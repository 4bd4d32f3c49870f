"""The token cache: each source tokenised once into a memory-mapped file, then reused.

A source's tokens live in ``<dir>/<key>.bin`` (uint16 when the vocabulary fits, else uint32)
beside ``<dir>/<key>.json`` (counts, the held-out boundary, what the source was). The key
hashes the source's identity (builtin name and versions / file path, size and mtime / dataset
name, config, split and revision; the text field) with the tokenizer's name and vocabulary.

Documents are packed: each one's ids followed by the end-of-document id, no padding. The
held-out region is the tail of the stream from a document boundary on. Both files are written
to a temporary name and renamed, ``.bin`` first, so a crash never leaves a file that is trusted
later: a ``.json`` is only written once its ``.bin`` is complete, and it is checked on load.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evotui import atomic
from evotui.data.tokenizers import Tokenizer

FORMAT = 1  # bump when the layout or packing changes
BATCH_CHARS = 1 << 20  # documents are encoded in batches of about this much text
HELDOUT_FRACTION = 0.01  # held-out is at least this share of a stream (or eval_tokens) ...
HELDOUT_MAX = 0.25  # ... aiming at no more than this share ...
TRAIN_MIN = 0.5  # ... and training always keeps more than this share


def default_cache_dir() -> Path:
    """``$EVOTUI_CACHE``, else ``~/.cache/evotui/tokens``."""
    return Path(os.environ.get("EVOTUI_CACHE") or "~/.cache/evotui/tokens").expanduser()


@dataclass
class TokenFile:
    """A source's packed tokens (memory-mapped) and where its held-out tail starts."""

    key: str
    tokens: np.ndarray
    heldout_start: int
    meta: dict[str, Any]

    @property
    def train(self) -> np.ndarray:
        return self.tokens[: self.heldout_start]

    @property
    def heldout(self) -> np.ndarray:
        return self.tokens[self.heldout_start :]


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


def heldout_start(tokens: np.ndarray, eot: int, eval_tokens: int) -> int:
    """Where the held-out tail begins: the start of a document, so that the tail holds at least
    max(eval_tokens, 1%) tokens (aiming at no more than a quarter) and training keeps more than
    half. A stream without such a boundary is split inside a document."""
    n = len(tokens)
    want = min(max(eval_tokens, int(n * HELDOUT_FRACTION)), int(n * HELDOUT_MAX))
    if want <= 0:
        return n
    target, floor = n - want, int(n * TRAIN_MIN)
    hi = target
    while hi > floor:  # scan back from target in chunks for the last end of document
        lo = max(floor, hi - (1 << 20))
        ends = np.flatnonzero(np.asarray(tokens[lo:hi]) == eot)
        if len(ends):
            return lo + int(ends[-1]) + 1
        hi = lo
    return target


def load(cache_dir: Path, key: str, eval_tokens: int, eot: int) -> TokenFile | None:
    """The cached tokens for ``key``, or None when missing or incomplete."""
    meta_path, bin_path = cache_dir / f"{key}.json", cache_dir / f"{key}.bin"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        if meta.get("format") != FORMAT or meta.get("key") != key:
            return None
        if bin_path.stat().st_size != meta["n_tokens"] * dtype.itemsize:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    tokens = _open_tokens(bin_path, dtype, meta["n_tokens"])
    if meta.get("eval_tokens") != eval_tokens:  # the split depends on eval_tokens: redo it
        meta["eval_tokens"] = eval_tokens
        meta["heldout_start"] = heldout_start(tokens, eot, eval_tokens)
        atomic.write_text(meta_path, json.dumps(meta, indent=1))
    return TokenFile(key, tokens, meta["heldout_start"], meta)


def build(cache_dir: Path, key: str, docs: Iterable[str], tokenizer: Tokenizer,
          source: str, eval_tokens: int, workers: int = 0,
          progress: Callable[[str], None] | None = None) -> TokenFile:
    """Tokenise ``docs`` (packed, each followed by eot) into ``<key>.bin`` and describe it in
    ``<key>.json``; ``workers`` > 0 encodes in that many processes."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    bin_path = cache_dir / f"{key}.bin"
    t0 = last = time.monotonic()
    n_tokens = n_docs = 0
    with atomic.writer(bin_path) as f:
        for count, ids in _encode(tokenizer, _batches(docs), workers):
            f.write(ids.astype(dtype).tobytes())
            n_docs += count
            n_tokens += len(ids)
            if progress and time.monotonic() - last > 5:
                last = time.monotonic()
                progress(f"{source}: {n_docs:,} documents, {n_tokens:,} tokens so far")
    tokens = _open_tokens(bin_path, dtype, n_tokens)
    meta = {
        "format": FORMAT, "key": key, "source": source, "tokenizer": tokenizer.name,
        "vocab_size": tokenizer.vocab_size, "eot": tokenizer.eot, "dtype": dtype.name,
        "n_tokens": n_tokens, "n_docs": n_docs, "eval_tokens": eval_tokens,
        "heldout_start": heldout_start(tokens, tokenizer.eot, eval_tokens),
        "seconds": round(time.monotonic() - t0, 2),
    }
    atomic.write_text(cache_dir / f"{key}.json", json.dumps(meta, indent=1))
    return TokenFile(key, tokens, meta["heldout_start"], meta)


def _open_tokens(path: Path, dtype: np.dtype, n: int) -> np.ndarray:
    if n == 0:  # numpy cannot map an empty file
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))


def _batches(docs: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for doc in docs:
        batch.append(doc)
        size += len(doc)
        if size >= BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(tokenizer: Tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _encode_in_worker(batch: list[str]) -> tuple[int, np.ndarray]:
    assert _WORKER_TOKENIZER is not None
    return len(batch), _WORKER_TOKENIZER.encode_packed(batch)


def _encode(tokenizer: Tokenizer, batches: Iterator[list[str]],
            workers: int) -> Iterator[tuple[int, np.ndarray]]:
    """(documents, packed ids) per batch, in order."""
    if workers <= 0:
        for batch in batches:
            yield len(batch), tokenizer.encode_packed(batch)
        return
    # fork: workers need no re-import of the caller's main module (spawn does); they only
    # tokenise, so the parent's torch threads do not matter
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        while group := list(itertools.islice(batches, 2 * workers)):  # bounded read-ahead
            yield from pool.imap(_encode_in_worker, group)
