"""Batches from packed token streams: random training windows and fixed held-out windows.

A training batch depends only on (seed, step): any step can be regenerated exactly (resume
continues with the batch it would have had) and each seed draws its own windows. Windows are
contiguous slices of a shard's packed stream (documents joined by eot, never padded) and lie
wholly inside its training region. Held-out windows are evenly spaced over a tag's held-out
regions and the same for every candidate, so their losses compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from evotui.data.tokenizers import Tokenizer
from evotui.errors import UserError

if TYPE_CHECKING:
    import torch

Batch = tuple["torch.Tensor", "torch.Tensor"]


@dataclass
class Region:
    """Tokens of one shard: the training region (train shards) or a held-out region."""

    where: str  # the config path, e.g. data.shards[0]
    source: str  # what it is, e.g. builtin:code
    tag: str
    weight: float
    tokens: np.ndarray

    def check_window(self, seq_len: int, what: str) -> None:
        if len(self.tokens) < seq_len + 1:
            raise UserError.single(
                f"{self.source} has {len(self.tokens):,} {what} tokens, fewer than one window "
                f"of seq_len + 1 = {seq_len + 1}; give it more text or lower data.seq_len",
                path=self.where)


def _rng(*seeds: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([s % 2**64 for s in seeds]))


def _as_batch(windows: np.ndarray) -> Batch:
    import torch  # here, not at import: the engine reads datasets without torch

    w = torch.from_numpy(windows.astype(np.int64))
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


class Dataset:
    """Training shards, held-out regions grouped by tag, and the tokenizer that made them."""

    def __init__(self, tokenizer: Tokenizer, train_shards: list[Region],
                 heldout: dict[str, list[Region]]) -> None:
        self.tokenizer = tokenizer
        self.train_shards = train_shards
        self.heldout = heldout
        self.eval_tags = list(heldout)
        weights = np.array([s.weight for s in train_shards], dtype=np.float64)
        self._p = weights / weights.sum()
        self._filler_pool: np.ndarray | None = None

    def check_windows(self, seq_len: int) -> None:
        """A clear error for any shard too short to give one window of ``seq_len``."""
        for s in self.train_shards:
            s.check_window(seq_len, "training")
        for regions in self.heldout.values():
            if not any(len(r.tokens) >= seq_len + 1 for r in regions):
                regions[0].check_window(seq_len, "held-out")

    def train_batch(self, step: int, seed: int, batch_size: int, seq_len: int) -> Batch:
        """(x, y), int64 (batch_size, seq_len), y = x shifted by one; a function of
        (seed, step) only. Each row picks a shard by weight, then a uniform window in it."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        rng = _rng(seed, step)
        which = rng.choice(len(self.train_shards), size=batch_size, p=self._p)
        windows = np.empty((batch_size, seq_len + 1), dtype=np.int64)
        for i, shard in enumerate(self.train_shards):
            rows = np.flatnonzero(which == i)
            if not len(rows):
                continue
            shard.check_window(seq_len, "training")
            starts = rng.integers(0, len(shard.tokens) - seq_len, size=len(rows))
            for row, start in zip(rows, starts, strict=True):
                windows[row] = shard.tokens[start : start + seq_len + 1]
        return _as_batch(windows)

    def eval_batches(self, tag: str, batch_size: int, seq_len: int,
                     n_batches: int) -> list[Batch]:
        """``n_batches`` batches of windows evenly spaced over the tag's held-out regions:
        the same for every call, candidate and seed."""
        regions = [r for r in self._regions(tag) if len(r.tokens) >= seq_len + 1]
        if not regions:
            self._regions(tag)[0].check_window(seq_len, "held-out")
        spans = np.array([len(r.tokens) - seq_len for r in regions], dtype=np.int64)
        ends = np.cumsum(spans)
        n = batch_size * n_batches
        points = (np.arange(n, dtype=np.int64) * int(ends[-1])) // n  # evenly spaced
        owner = np.searchsorted(ends, points, side="right")
        local = points - (ends - spans)[owner]
        windows = np.stack([regions[o].tokens[s : s + seq_len + 1]
                            for o, s in zip(owner, local, strict=True)]).astype(np.int64)
        return [_as_batch(windows[i * batch_size : (i + 1) * batch_size])
                for i in range(n_batches)]

    def heldout_tokens(self, tag: str) -> np.ndarray:
        """All held-out tokens of a tag (its regions, each starting at a document)."""
        return np.concatenate([np.asarray(r.tokens) for r in self._regions(tag)])

    def filler(self, n: int, seed: int) -> np.ndarray:
        """``n`` contiguous held-out tokens (int64) at a place chosen by ``seed``, for a
        long-context probe; held-out text is repeated if there is less than ``n`` of it."""
        if self._filler_pool is None:
            self._filler_pool = np.concatenate([self.heldout_tokens(t) for t in self.eval_tags])
        pool = self._filler_pool
        if len(pool) < n:
            pool = np.tile(pool, -(-n // len(pool)))
        start = int(_rng(seed).integers(0, len(pool) - n + 1))
        return pool[start : start + n].astype(np.int64)

    def _regions(self, tag: str) -> list[Region]:
        if tag not in self.heldout:
            raise KeyError(f"no held-out data tagged {tag!r}; tags: {', '.join(self.eval_tags)}")
        return self.heldout[tag]

    def describe(self) -> list[str]:
        """One line per region: where, source, tag, tokens."""
        lines = [f"train {s.where} {s.source} [{s.tag}] {len(s.tokens):,} tokens, "
                 f"weight {s.weight:g}" for s in self.train_shards]
        for tag, regions in self.heldout.items():
            lines += [f"held-out {r.where} {r.source} [{tag}] {len(r.tokens):,} tokens"
                      for r in regions]
        return lines
