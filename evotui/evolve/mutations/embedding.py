"""Whole-model operators: the residual width, the output head, embedding init and dropout."""

from __future__ import annotations

import random

from evotui.evolve.mutations.base import Data, Mutation, MutationContext, register
from evotui.evolve.mutations.helpers import choose_other, fit_block_to_width, round_to

WIDTH_FACTORS = (2 / 3, 0.75, 1.25, 1.5)
MIN_DIM, MAX_DIM = 32, 8192
DROPOUTS = (0.0, 0.05, 0.1)


@register
class Width(Mutation):
    """Scale the residual width; blocks are refitted where a width rule binds (SSM heads)."""

    name = "model.width"
    weight = 0.3

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        old = data["emb"]["dim"]
        q = 64 if old >= 256 else 16
        options = [min(MAX_DIM, max(MIN_DIM, round_to(old * f, q))) for f in WIDTH_FACTORS]
        data["emb"]["dim"] = new = choose_other(rng, options, old)
        for block in data["blocks"]:
            fit_block_to_width(block, new, old)
        ctx.note = f"dim {old} -> {new}"


@register
class TieHead(Mutation):
    name = "head.tie"
    weight = 0.2

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        head = data.setdefault("head", {})
        head["tie_embeddings"] = not head.get("tie_embeddings", True)
        ctx.note = "tied" if head["tie_embeddings"] else "untied"


@register
class InitStd(Mutation):
    name = "emb.init_std"
    weight = 0.2

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        old = data["emb"].get("init_std", 0.02)
        data["emb"]["init_std"] = choose_other(rng, (0.01, 0.015, 0.02, 0.03), old)
        ctx.note = f"init_std {old} -> {data['emb']['init_std']}"


@register
class Dropout(Mutation):
    """Dropout of the embeddings or of one dense feed-forward (attention dropout is left
    alone: it forces the dense attention path)."""

    name = "model.dropout"
    weight = 0.15

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        sites = [("emb", data["emb"])]
        sites += [(f"block {b['id']} ffn", b["ffn"]) for b in data["blocks"]
                  if b.get("ffn", {}).get("type") == "dense"]
        where, target = rng.choice(sites)
        old = target.get("dropout", 0.0)
        target["dropout"] = choose_other(rng, DROPOUTS, old)
        ctx.note = f"{where}: dropout {old} -> {target['dropout']}"
