"""State-space operators: add a mamba2 branch, tune one of its knobs, remove it."""

from __future__ import annotations

import math
import random

from evotui.dsl.model import BlockSpec, ModelSpec
from evotui.evolve.mutations.base import BlockMutation, Data, MutationContext, Skip, register
from evotui.evolve.mutations.helpers import (
    branches,
    choose_other,
    divisors,
    prune_gate,
    ssm_head_dim,
)

KNOBS: dict[str, tuple[int | float | None, ...]] = {
    "d_state": (8, 16, 32, 64, 128),
    "d_conv": (2, 3, 4, 6, 8),
    "expand": (1, 2, 3, 4),
    "chunk": (16, 32, 64, 128, 256),
    "head_dim": (16, 32, 64, 128),
    "gate": (None, 0.1, 0.25, 0.5, 1.0),
    "dt_rank": (),  # options depend on the width: see dt_ranks
}


def dt_ranks(dim: int) -> tuple[int, ...]:
    return tuple(sorted({max(1, math.ceil(dim / r)) for r in (32, 16, 8)}))


def ssm_template(data: Data, rng: random.Random, ctx: MutationContext) -> Data:
    """A copy of another block's SSM (fitted to the width), else mamba2 defaults."""
    dim = data["emb"]["dim"]
    others = [b["ssm"] for b in data["blocks"] if b.get("ssm") is not None]
    ssm = dict(rng.choice(others)) if others else {"kind": "mamba2", "d_state": 16,
                                                   "d_conv": 4, "expand": 2}
    ssm["chunk"] = min(ssm.get("chunk", 64), ctx.seq_len)
    inner = ssm.get("expand", 2) * dim
    ssm["head_dim"] = ssm_head_dim(inner, ssm.get("head_dim", 64))
    return ssm


@register
class AddSSM(BlockMutation):
    name = "ssm.add"
    weight = 0.6

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.ssm is None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        block["ssm"] = ssm_template(data, rng, ctx)
        return f"d_state {block['ssm'].get('d_state', 16)}"


@register
class TuneSSM(BlockMutation):
    name = "ssm.tune"

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.ssm is not None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        s, dim = block["ssm"], data["emb"]["dim"]
        knob = rng.choice(list(KNOBS))
        old = s.get(knob)
        if knob == "dt_rank":
            options: tuple[int | float | None, ...] = dt_ranks(dim)
        elif knob == "chunk":
            options = tuple(c for c in KNOBS["chunk"] if c <= ctx.seq_len)
        elif knob == "head_dim":
            inner = s.get("expand", 2) * dim
            options = tuple(h for h in divisors(inner) if 8 <= h <= 256)
            options = tuple(h for h in options if h in KNOBS["head_dim"]) or options
        else:
            options = KNOBS[knob]
        new = choose_other(rng, options, old)
        if new is None:
            s.pop(knob, None)
        else:
            s[knob] = new
        if knob == "expand":
            inner = int(new) * dim  # type: ignore[arg-type]
            if inner % s.get("head_dim", 64):
                s["head_dim"] = ssm_head_dim(inner, s.get("head_dim", 64))
        if s.get(knob) == old:
            raise Skip
        return f"{knob} {old} -> {new}"


@register
class RemoveSSM(BlockMutation):
    name = "ssm.remove"
    weight = 0.4

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.ssm is not None and len(block.branches()) > 1

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        del block["ssm"]
        prune_gate(block)
        return "kept " + ", ".join(branches(block))
