"""Depth operators: duplicate, insert, remove and move blocks.

Ids follow blocks: a moved block keeps its id (its weights follow it); a duplicate and a newly
inserted block get fresh ids, and a duplicate records the block it copies so it can inherit
that block's weights. Recurrence spans are remapped by every edit (see ``helpers``)."""

from __future__ import annotations

import copy
import random

from evotui.dsl.model import ModelSpec
from evotui.evolve.mutations.attention import attn_template
from evotui.evolve.mutations.base import Data, Mutation, MutationContext, Skip, register
from evotui.evolve.mutations.helpers import insert_block, new_id, remove_block, round_to
from evotui.evolve.mutations.ssm import ssm_template


def room_to_grow(spec: ModelSpec, ctx: MutationContext) -> bool:
    return ctx.max_layers is None or len(spec.blocks) < ctx.max_layers


@register
class Duplicate(Mutation):
    name = "block.duplicate"
    weight = 0.6

    def applicable(self, spec: ModelSpec, ctx: MutationContext) -> bool:
        return room_to_grow(spec, ctx)

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        i = rng.randrange(len(data["blocks"]))
        source = data["blocks"][i]
        block = copy.deepcopy(source)
        block["id"] = new_id(rng, ctx.taken)
        ctx.copies[block["id"]] = source["id"]
        insert_block(data, i + 1, block)
        ctx.note = f"block {source['id']} -> {block['id']} at {i + 1}"


def fresh_block(data: Data, rng: random.Random, ctx: MutationContext) -> Data:
    """A plain block shaped like the model's others: attention and a feed-forward."""
    block: Data = {}
    if any(b.get("attn") is not None for b in data["blocks"]):
        block["attn"] = attn_template(data, rng)
    ffns = [b["ffn"] for b in data["blocks"] if b.get("ffn") is not None]
    if ffns:
        block["ffn"] = copy.deepcopy(rng.choice(ffns))
    elif not block:
        block["ssm"] = ssm_template(data, rng, ctx)
    if "ffn" not in block and "attn" in block:
        block["ffn"] = {"type": "dense", "hidden": round_to(8 * data["emb"]["dim"] / 3, 8)}
    return block


@register
class Insert(Mutation):
    name = "block.insert"
    weight = 0.5

    def applicable(self, spec: ModelSpec, ctx: MutationContext) -> bool:
        return room_to_grow(spec, ctx)

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        block = {"id": new_id(rng, ctx.taken), **fresh_block(data, rng, ctx)}
        pos = rng.randint(0, len(data["blocks"]))
        insert_block(data, pos, block)
        ctx.note = f"new block {block['id']} at {pos}"


@register
class Remove(Mutation):
    name = "block.remove"
    weight = 0.5

    def applicable(self, spec: ModelSpec, ctx: MutationContext) -> bool:
        return len(spec.blocks) > max(1, ctx.min_layers)

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        pos = rng.randrange(len(data["blocks"]))
        block = remove_block(data, pos)
        ctx.note = f"block {block['id']} from {pos}"


@register
class Move(Mutation):
    name = "block.move"
    weight = 0.5

    def applicable(self, spec: ModelSpec, ctx: MutationContext) -> bool:
        return len(spec.blocks) > 1

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        n = len(data["blocks"])
        src = rng.randrange(n)
        dst = rng.choice([j for j in range(n) if j != src])
        block = remove_block(data, src)
        insert_block(data, dst, block)
        if [b["id"] for b in data["blocks"]] == [b.id for b in ctx.current.blocks]:
            raise Skip
        ctx.note = f"block {block['id']} {src} -> {dst}"
