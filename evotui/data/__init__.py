"""Tokens for training and evaluation: shards, tokenizers, the token cache, batches.

:func:`prepare` goes in this order, so that nothing is read that a later check would refuse:
the tokenizer (resolved, fetched if it must be) and the model's vocabulary; each shard
resolved into a :class:`~evotui.data.sources.Source` with its token budget (printed); every
source opened (all problems reported at once); then each cache filled to its budget (built,
extended or reused) and the :class:`Dataset` returned.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from evotui.data import budget as budgets
from evotui.data import build, cache, sources
from evotui.data.batches import Batch, Dataset, Region
from evotui.data.offline import offline
from evotui.data.sources import Source
from evotui.data.tokenizers import BPE_TRAIN_CHARS, Tokenizer, check_vocab, get_tokenizer
from evotui.dsl.run import RunConfig
from evotui.errors import Problem, UserError

__all__ = ["Batch", "Dataset", "Region", "Tokenizer", "check_vocab", "get_tokenizer",
           "offline", "pinned", "prepare", "prepare_run", "resolve_sources"]


def prepare_run(cfg: RunConfig, train_tokens: int | None,
                progress: Callable[[str], None] | None = None, *,
                cache_dir: Path | None = None, workers: int | None = None) -> RunConfig:
    """Before a run's workers start: every cache built to its budget, with a progress bar per
    shard on stderr (other lines go to ``progress``, default: above the bars). Returns ``cfg``
    with each shard's budget written into its ``max_tokens``, so whoever reads the run's config
    later (its workers, a resumed run) reads the same tokens."""
    from evotui.data.progress import BuildBars

    cfg = pinned(cfg, train_tokens)
    with BuildBars() as bars:
        prepare(cfg, cache_dir, progress or bars.say, workers=workers, on_build=bars)
    return cfg


def pinned(cfg: RunConfig, train_tokens: int | None) -> RunConfig:
    """``cfg`` with every shard's token budget as its ``max_tokens`` (see budget.py)."""
    train, evals = budgets.shard_budgets(cfg, train_tokens)
    d = cfg.data
    data = d.model_copy(update={
        "shards": [s.model_copy(update={"max_tokens": b}) for s, b in zip(d.shards, train,
                                                                          strict=True)],
        "eval_shards": [s.model_copy(update={"max_tokens": b})
                        for s, b in zip(d.eval_shards, evals, strict=True)]})
    return cfg.model_copy(update={"data": data})


def prepare(cfg: RunConfig, cache_dir: Path | None = None,
            progress: Callable[[str], None] | None = None, *,
            train_tokens: int | None = None, workers: int | None = None,
            on_build: build.OnProgress | None = None) -> Dataset:
    """The :class:`Dataset` training reads from (see the module docstring).

    ``train_tokens``: what the run trains on in all, which budgets shards without
    ``max_tokens`` (None: those are read whole). ``workers``: tokeniser processes (default:
    ``data.workers``, else the machine's cores). ``on_build`` sees every build's progress;
    without it a line goes to ``progress`` every few seconds.
    """
    d = cfg.data
    cache_dir = Path(cache_dir) if cache_dir is not None else cache.default_cache_dir()
    say = progress or (lambda _msg: None)
    tokenizer = resolve_tokenizer(cfg, cache_dir)  # before any shard is touched
    train, evals = resolve_sources(cfg, train_tokens)
    for src in train + evals:
        say(f"{src.where} {src.name}: budget {budgets.describe(src.budget)}")
    problems: list[Problem] = []
    for src in train + evals:
        try:
            src.check()
        except UserError as e:
            problems += e.problems
    if problems:
        raise UserError(problems)
    if tokenizer is None:  # bpe:N: trained on the training shards, which all open
        say(f"tokenizer {d.tokenizer}: training or reusing a cached one")
        tokenizer = get_tokenizer(d.tokenizer, lambda: _bpe_texts(train),
                                  cache_dir / "tokenizers", _bpe_key(train))
        check_vocab(tokenizer, cfg.model.emb.vocab)

    def key_of(src: Source) -> str:
        return cache.cache_key(src.identity(), tokenizer)

    # one budget per cache: the largest any use of it asks for
    wanted: dict[str, int | None] = {}
    for src in train + evals:
        k, b = key_of(src), src.budget
        if k not in wanted:
            wanted[k] = b
        else:
            old = wanted[k]
            wanted[k] = None if old is None or b is None else max(old, b)
    n_workers = workers or d.workers or build.default_workers()
    files: dict[str, cache.TokenFile] = {}

    def tokens(src: Source) -> cache.TokenFile:
        key = key_of(src)
        if key not in files:
            src.budget = wanted[key]
            c = cache.Cache(cache_dir, key)
            cached = c.read_meta() and c.covers(src.budget)
            if not cached:
                build.fill(c, src, tokenizer, n_workers, on_build or _lines(src.where, say))
            elif on_build is not None:
                on_build(build.Progress(src.name, src.budget, c.n_docs, c.n_tokens,
                                        c.n_tokens, 0, None, 0.0, done=True, cached=True))
            files[key] = c.view(src.budget, d.eval_tokens)
            if on_build is None:
                tf = files[key]
                say(f"{src.where} {src.name}: {len(tf.tokens):,} tokens in {tf.docs:,} "
                    f"documents ({tokenizer.name}{', cached' if cached else ''})")
        return files[key]

    # a source that is both trained on and evaluated keeps its held-out tail out of training
    shared = {key_of(s) for s in train} & {key_of(s) for s in evals}
    train_regions, heldout = [], {}
    for src in train:
        tf = tokens(src)
        tag = src.shard.tag or "data"
        whole = evals and key_of(src) not in shared
        train_regions.append(Region(src.where, src.name, tag, src.shard.weight,
                                    tf.tokens if whole else tf.train))
        if not evals:
            heldout.setdefault(tag, []).append(Region(src.where, src.name, tag, 1.0,
                                                      tf.heldout))
    for src in evals:
        tf, tag = tokens(src), src.shard.tag or "data"
        part = tf.heldout if key_of(src) in shared else tf.tokens
        heldout.setdefault(tag, []).append(Region(src.where, src.name, tag, 1.0, part))
    dataset = Dataset(tokenizer, train_regions, heldout)
    dataset.check_windows(d.seq_len)
    return dataset


def resolve_tokenizer(cfg: RunConfig, cache_dir: Path) -> Tokenizer | None:
    """The run's tokenizer, its vocabulary checked against the model's; None for a
    ``bpe:<N>`` not trained yet (it is trained on the shards, once they are known to open)."""
    name, vocab = cfg.data.tokenizer, cfg.model.emb.vocab
    m = re.fullmatch(r"bpe:(\d+)", name)
    if m:
        if int(m.group(1)) < 258:
            raise UserError.single(f"{name}: a byte-level BPE needs at least 258 ids (256 "
                                   "bytes, <|endoftext|> and merges)", path="data.tokenizer")
        if vocab < int(m.group(1)):
            raise UserError.single(f"{vocab} is smaller than tokenizer {name}'s vocabulary; "
                                   f"use at least {m.group(1)}", path="model.emb.vocab")
        return None
    tokenizer = get_tokenizer(name, None, cache_dir / "tokenizers")
    check_vocab(tokenizer, vocab)
    return tokenizer


def resolve_sources(cfg: RunConfig, train_tokens: int | None = None) -> tuple[list[Source],
                                                                            list[Source]]:
    """The run's training and eval shards as sources with their budgets (nothing read)."""
    d = cfg.data
    train_b, eval_b = budgets.shard_budgets(cfg, train_tokens)
    train = [sources.resolve(s, f"data.shards[{i}]", d.hf_revision, b)
             for i, (s, b) in enumerate(zip(d.shards, train_b, strict=True))]
    evals = [sources.resolve(s, f"data.eval_shards[{i}]", d.hf_revision, b)
             for i, (s, b) in enumerate(zip(d.eval_shards, eval_b, strict=True))]
    return train, evals


def _lines(where: str, say: Callable[[str], None]) -> build.OnProgress:
    """Build progress as a line every few seconds."""
    last = [0.0]

    def show(p: build.Progress) -> None:
        if p.cached or (not p.done and p.seconds - last[0] < 5):
            return
        last[0] = p.seconds
        state = "tokenised" if p.done else "tokenising"
        say(f"{where} {p.source}: {state} {p.docs:,} documents, {p.tokens:,} tokens, "
            f"{p.bytes_read / 1e6:,.1f} MB read ({p.tokens_per_s:,.0f} tokens/s)")

    return show


def _bpe_budgets(train: list[Source]) -> list[int]:
    total = sum(s.shard.weight for s in train)
    return [int(BPE_TRAIN_CHARS * s.shard.weight / total) for s in train]


def _bpe_texts(train: list[Source]) -> Iterator[str]:
    """A few MB of the training shards, shared by weight, for a bpe:N tokenizer."""
    for src, chars in zip(train, _bpe_budgets(train), strict=True):
        for doc, _ in src.documents():
            if chars <= 0:
                break
            yield doc[:chars]
            chars -= len(doc)


def _bpe_key(train: list[Source]) -> str:
    parts = [[s.identity(), b] for s, b in zip(train, _bpe_budgets(train), strict=True)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
