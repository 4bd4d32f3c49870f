"""Tokens for training and evaluation: shards, tokenizers, the token cache, batches."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from evotui.data import cache, sources
from evotui.data.batches import Batch, Dataset, Region
from evotui.data.tokenizers import BPE_TRAIN_CHARS, Tokenizer, check_vocab, get_tokenizer
from evotui.dsl.run import RunConfig, ShardSpec
from evotui.errors import Problem, UserError

__all__ = ["Batch", "Dataset", "Region", "Tokenizer", "check_vocab", "get_tokenizer", "prepare"]

Located = list[tuple[str, ShardSpec]]


def prepare(cfg: RunConfig, cache_dir: Path | None = None,
            progress: Callable[[str], None] | None = None) -> Dataset:
    """Check that every shard and the tokenizer can be loaded (all problems reported at once,
    before any tokenising), check the model's vocabulary, then tokenise each source once into
    the token cache (or reuse it) and return the :class:`Dataset` training reads from."""
    d = cfg.data
    cache_dir = Path(cache_dir) if cache_dir is not None else cache.default_cache_dir()
    say = progress or (lambda _msg: None)
    train = [(f"data.shards[{i}]", s) for i, s in enumerate(d.shards)]
    evals = [(f"data.eval_shards[{i}]", s) for i, s in enumerate(d.eval_shards)]

    problems: list[Problem] = []
    for where, shard in train + evals:
        try:
            sources.check_loadable(shard, where, d.hf_revision)
        except UserError as e:
            problems += e.problems
    tokenizer: Tokenizer | None = None
    bpe = d.tokenizer.startswith("bpe:")
    if not bpe:
        try:
            tokenizer = get_tokenizer(d.tokenizer, None, cache_dir / "tokenizers")
        except UserError as e:
            problems += e.problems
    if problems:
        raise UserError(problems)
    if tokenizer is None:  # bpe:N: trained on the training shards, which all load
        say(f"tokenizer {d.tokenizer}: training or reusing a cached one")
        tokenizer = get_tokenizer(d.tokenizer, lambda: _bpe_texts(train, d.hf_revision),
                                  cache_dir / "tokenizers", _bpe_key(train, d.hf_revision))
    check_vocab(tokenizer, cfg.model.emb.vocab)

    files: dict[str, cache.TokenFile] = {}

    def tokens(where: str, shard: ShardSpec) -> cache.TokenFile:
        key = cache.cache_key(sources.identity(shard, d.hf_revision), tokenizer)
        if key not in files:
            found = cache.load(cache_dir, key, d.eval_tokens, tokenizer.eot)
            if found is None:
                what = sources.describe(shard)
                say(f"{where} {what}: tokenising with {tokenizer.name} (once; cached in "
                    f"{cache_dir})")
                t0 = time.monotonic()
                docs = sources.iter_documents(shard, where, d.hf_revision)
                found = cache.build(cache_dir, key, docs, tokenizer, what, d.eval_tokens,
                                    d.workers, say)
                say(f"{where} {what}: {found.meta['n_tokens']:,} tokens in "
                    f"{found.meta['n_docs']:,} documents ({time.monotonic() - t0:.1f} s)")
            else:
                say(f"{where} {sources.describe(shard)}: {found.meta['n_tokens']:,} tokens "
                    "(cached)")
            files[key] = found
        return files[key]

    def key_of(shard: ShardSpec) -> str:
        return cache.cache_key(sources.identity(shard, d.hf_revision), tokenizer)

    # a source that is both trained on and evaluated keeps its held-out tail out of training
    shared = {key_of(s) for _, s in train} & {key_of(s) for _, s in evals}
    train_regions, heldout = [], {}
    for where, shard in train:
        tf = tokens(where, shard)
        what, tag = sources.describe(shard), shard.tag or "data"
        whole = evals and key_of(shard) not in shared
        train_regions.append(Region(where, what, tag, shard.weight,
                                    tf.tokens if whole else tf.train))
        if not evals:
            heldout.setdefault(tag, []).append(Region(where, what, tag, 1.0, tf.heldout))
    for where, shard in evals:
        tf, tag = tokens(where, shard), shard.tag or "data"
        part = tf.heldout if key_of(shard) in shared else tf.tokens
        heldout.setdefault(tag, []).append(Region(where, sources.describe(shard), tag, 1.0,
                                                  part))
    dataset = Dataset(tokenizer, train_regions, heldout)
    dataset.check_windows(d.seq_len)
    return dataset


def _bpe_budgets(train: Located) -> list[int]:
    total = sum(s.weight for _, s in train)
    return [int(BPE_TRAIN_CHARS * s.weight / total) for _, s in train]


def _bpe_texts(train: Located, hf_revision: str | None) -> Iterator[str]:
    """A few MB of the training shards, shared by weight, for a bpe:N tokenizer."""
    for (where, shard), budget in zip(train, _bpe_budgets(train), strict=True):
        for doc in sources.iter_documents(shard, where, hf_revision):
            if budget <= 0:
                break
            yield doc[:budget]
            budget -= len(doc)


def _bpe_key(train: Located, hf_revision: str | None) -> str:
    parts = [[sources.identity(s, hf_revision), b] for (_, s), b in
             zip(train, _bpe_budgets(train), strict=True)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
