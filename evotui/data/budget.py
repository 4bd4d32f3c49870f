"""Token budgets: how much of each shard a run reads, decided before anything is read.

A shard's budget is its ``max_tokens`` when set. Otherwise it is derived from the run: the
tokens the whole search will train on (every candidate's rung 1, the promoted ones' rung 2),
shared by the shards' weights, plus the held-out tail (``eval_tokens``) when the shard is
also evaluated, times ``HEADROOM``. Without a run to derive it from, a shard is read whole.
An eval shard's budget is its held-out part, ``eval_tokens``, with the same headroom.
"""

from __future__ import annotations

import math

from evotui.dsl.run import RunConfig

HEADROOM = 1.1  # read this much more than the derivation asks for


def search_tokens(cfg: RunConfig, rungs: tuple[int, int], tokens_per_step: int) -> int:
    """The tokens a whole search trains on: each generation's ``population`` candidates
    train rung 1 (``rungs[0]`` steps); the ``topk_keep`` best continue to ``rungs[1]``."""
    ev = cfg.evolution
    r1, r2 = rungs
    promoted = math.ceil(ev.topk_keep * ev.population)
    per_generation = ev.population * r1 + promoted * max(0, r2 - r1)
    return ev.generations * per_generation * tokens_per_step


def shard_budgets(cfg: RunConfig, train_tokens: int | None) -> tuple[list[int | None],
                                                                     list[int | None]]:
    """(budgets of data.shards, budgets of data.eval_shards); None: the whole source."""
    d = cfg.data
    total_weight = sum(s.weight for s in d.shards)
    heldout = 0 if d.eval_shards else d.eval_tokens
    train: list[int | None] = []
    for s in d.shards:
        if s.max_tokens is not None:
            train.append(s.max_tokens)
        elif train_tokens is None:
            train.append(None)
        else:
            train.append(math.ceil((train_tokens * s.weight / total_weight + heldout)
                                   * HEADROOM))
    evals = [s.max_tokens or math.ceil(d.eval_tokens * HEADROOM) for s in d.eval_shards]
    return train, evals


def describe(budget: int | None) -> str:
    return "the whole source" if budget is None else f"{budget:,} tokens"
