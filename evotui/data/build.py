"""Filling a cache to a budget: read documents, tokenise them in parallel, append in order.

The reader (this process) groups documents into batches of about ``BATCH_CHARS`` characters;
a pool of ``workers`` processes encodes them (batched ``tokenizers`` calls, one thread each);
batches come back in order and are appended and committed one at a time, so a kill loses at
most the batches in flight. Reading stops at the document that reaches the budget: the cache
then holds exactly the documents a clean build of that budget would, whatever was built
before.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from evotui.data.cache import Cache
from evotui.data.sources import Source
from evotui.data.tokenizers import Tokenizer

BATCH_CHARS = 1 << 20  # documents are encoded in batches of about this much text


@dataclass
class Progress:
    """Where a build is: what the cache holds now and what this build read."""

    source: str
    budget: int | None
    docs: int  # documents in the cache
    tokens: int  # tokens in the cache
    start_tokens: int  # tokens the cache held when this build began
    bytes_read: int  # by this build
    total_bytes: int | None  # the source's size, when known
    seconds: float  # this build's
    done: bool = False
    cached: bool = False  # nothing to do: the cache covered the budget

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens - self.start_tokens) / self.seconds if self.seconds > 0 else 0.0


OnProgress = Callable[[Progress], None]


def default_workers() -> int:
    """The machine's cores (those this process may run on)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fill(cache: Cache, source: Source, tokenizer: Tokenizer, workers: int,
         on_progress: OnProgress | None = None) -> None:
    """Extend ``cache`` until it covers ``source.budget`` (or the source ends)."""
    say = on_progress or (lambda _p: None)
    with cache.locked():
        cache.start(source.name, source.identity(), tokenizer)
        state = Progress(source.name, source.budget, cache.n_docs, cache.n_tokens,
                         cache.n_tokens, 0, None, 0.0)
        if cache.covers(source.budget):
            state.done = state.cached = True
            say(state)
            return
        docs = source.documents(cache.meta["position"])
        t0 = time.monotonic()
        read = 0  # bytes already counted in the cache's meta
        stopped = False
        say(state)
        for texts, positions, (ids, lengths) in _encode(tokenizer, _batches(docs), workers):
            keep = len(lengths)
            if source.budget is not None:
                total = cache.n_tokens + np.cumsum(lengths)
                reached = np.flatnonzero(total >= source.budget)
                if len(reached):
                    keep, stopped = int(reached[0]) + 1, True
            n_ids = int(np.sum(lengths[:keep]))
            now = time.monotonic()
            cache.append(ids[:n_ids], lengths[:keep], positions[keep - 1],
                         docs.bytes_read - read, now - t0 - state.seconds)
            read = docs.bytes_read
            state.docs, state.tokens, state.seconds = cache.n_docs, cache.n_tokens, now - t0
            state.bytes_read, state.total_bytes = docs.bytes_read, docs.total_bytes
            del texts
            if stopped:
                break
            say(state)
        if not stopped:  # the source ended before the budget
            cache.append(np.zeros(0, np.uint32), np.zeros(0, np.int64), None,
                         docs.bytes_read - read, 0.0, exhausted=True)
        state.bytes_read, state.total_bytes = docs.bytes_read, docs.total_bytes
        state.seconds, state.done = time.monotonic() - t0, True
        say(state)


Batch = tuple[list[str], list[Any]]


def _batches(docs: Any) -> Iterator[Batch]:
    """(texts, the position after each) of about BATCH_CHARS characters."""
    texts: list[str] = []
    positions: list[Any] = []
    size = 0
    for text, position in docs:
        texts.append(text)
        positions.append(position)
        size += len(text)
        if size >= BATCH_CHARS:
            yield texts, positions
            texts, positions, size = [], [], 0
    if texts:
        yield texts, positions


Encoded = tuple[np.ndarray, np.ndarray]  # packed ids (uint32), tokens per document (int64)

_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(tokenizer: Tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _encode_in_worker(texts: list[str]) -> Encoded:
    assert _WORKER_TOKENIZER is not None
    return _WORKER_TOKENIZER.encode_docs(texts)


def _encode(tokenizer: Tokenizer, batches: Iterator[Batch],
            workers: int) -> Iterator[tuple[list[str], list[Any], Encoded]]:
    """Each batch with its encoding, in order; ``workers`` <= 1 (or a tokenizer not worth a
    pool, such as bytes) encodes in this process.
    Every encoder uses one thread (TOKENIZERS_PARALLELISM=false), so N workers use N cores."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if workers <= 1 or not tokenizer.parallel:  # bytes: a copy, cheaper than shipping it
        for texts, positions in batches:
            yield texts, positions, tokenizer.encode_docs(texts)
        return
    # fork: workers need no re-import of the caller's main module (spawn does); they only
    # tokenise, so the parent's threads do not matter
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        pending: collections.deque = collections.deque()
        for texts, positions in batches:  # read the next batch while the workers encode
            pending.append((texts, positions, pool.apply_async(_encode_in_worker, (texts,))))
            while len(pending) >= 2 * workers:  # bounded read-ahead
                texts, positions, result = pending.popleft()
                yield texts, positions, result.get()
        while pending:
            texts, positions, result = pending.popleft()
            yield texts, positions, result.get()
