"""Operators on a block's extras: retro memory, branch gates, registered custom components."""

from __future__ import annotations

import random
from typing import Any

from pydantic import ValidationError

from evotui.dsl import components
from evotui.dsl.model import BlockSpec, CustomExtra, ModelSpec, RetroExtra
from evotui.evolve.mutations.base import BlockMutation, Data, MutationContext, Skip, register
from evotui.evolve.mutations.helpers import branches, choose_other, gated_index, prune_gate

STRIDES = (8, 16, 32, 64, 128, 256)
SLOTS = (2, 4, 8, 16, 32)
AGGREGATORS = ("mean", "attention", "gate")
GATING_WEIGHTS = (0.1, 0.25, 0.5, 1.0, 2.0)
GATE_INITS = (0.2, 0.35, 0.5, 0.65, 0.8)


def indices(block: Data, kind: str) -> list[int]:
    return [j for j, e in enumerate(block.get("extras", [])) if e["type"] == kind]


def insert_extra(block: Data, extra: Data, rng: random.Random) -> None:
    extras = block.setdefault("extras", [])
    extras.insert(rng.randint(0, len(extras)), extra)


def remove_one(block: Data, kind: str, rng: random.Random) -> Data:
    j = rng.choice(indices(block, kind))
    return block["extras"].pop(j)


def has(block: BlockSpec, cls: type) -> bool:
    return any(isinstance(e, cls) for e in block.extras)


# -- retro -----------------------------------------------------------------------------------

@register
class AddRetro(BlockMutation):
    name = "retro.add"
    weight = 0.5

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return sum(isinstance(e, RetroExtra) for e in block.extras) < 2

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        n = ctx.seq_len
        stride = rng.choice([s for s in STRIDES if s <= n // 2] or [max(1, n // 2)])
        slots = rng.choice([s for s in SLOTS if s * stride <= n] or [1])
        extra = {"type": "retro", "memory_tokens": stride * slots, "stride": stride,
                 "aggregator": rng.choice(AGGREGATORS), "gating_weight": 0.5}
        insert_extra(block, extra, rng)
        return f"memory {extra['memory_tokens']} / stride {stride}, {extra['aggregator']}"


@register
class TuneRetro(BlockMutation):
    name = "retro.tune"

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return has(block, RetroExtra)

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        e = block["extras"][rng.choice(indices(block, "retro"))]
        n, dim = ctx.seq_len, data["emb"]["dim"]
        knob = rng.choice(("memory_tokens", "stride", "aggregator", "gating_weight", "mem_dim"))
        old: Any = e.get(knob)
        if knob == "memory_tokens":
            slots = e["memory_tokens"] // e["stride"]
            options = [s * e["stride"] for s in (slots // 2, slots - 1, slots + 1, 2 * slots)
                       if 1 <= s <= n // e["stride"]]
        elif knob == "stride":
            options = [s for s in (e["stride"] // 2, 2 * e["stride"], *STRIDES)
                       if 1 <= s <= e["memory_tokens"]]
        elif knob == "aggregator":
            options = list(AGGREGATORS)
        elif knob == "gating_weight":
            options = list(GATING_WEIGHTS)
        else:
            options = [max(1, dim // r) for r in (8, 4, 2)]
        e[knob] = choose_other(rng, options, old)
        return f"{knob} {old} -> {e[knob]}"


@register
class RemoveRetro(BlockMutation):
    name = "retro.remove"
    weight = 0.4

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return has(block, RetroExtra) and len(block.branches()) > 1

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        removed = remove_one(block, "retro", rng)
        prune_gate(block)
        return f"memory {removed['memory_tokens']} / stride {removed['stride']}"


# -- gated -----------------------------------------------------------------------------------

@register
class AddGate(BlockMutation):
    name = "gated.add"
    weight = 0.5

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.gated() is None and bool(block.branches())

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        present = list(dict.fromkeys(branches(block)))
        targets = rng.sample(present, rng.randint(1, len(present)))
        extra = {"type": "gated", "targets": targets, "init_weight": rng.choice(GATE_INITS),
                 "learnable": rng.random() < 0.85}
        block.setdefault("extras", []).append(extra)
        return "targets " + ", ".join(targets)


@register
class TuneGate(BlockMutation):
    name = "gated.tune"
    weight = 0.5

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.gated() is not None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        j = gated_index(block)
        assert j is not None
        g = block["extras"][j]
        knob = rng.choice(("targets", "init_weight", "learnable"))
        old = g.get(knob)
        if knob == "targets":
            present = list(dict.fromkeys(branches(block)))
            targets = [t for t in g["targets"] if t in present]
            missing = [t for t in present if t not in targets]
            if missing and (len(targets) <= 1 or rng.random() < 0.5):
                targets.append(rng.choice(missing))
            elif len(targets) > 1:
                targets.remove(rng.choice(targets))
            else:
                raise Skip
            g["targets"] = targets
        elif knob == "init_weight":
            g["init_weight"] = choose_other(rng, GATE_INITS, old)
        else:
            g["learnable"] = not g.get("learnable", True)
        return f"{knob} {old} -> {g[knob]}"


@register
class RemoveGate(BlockMutation):
    name = "gated.remove"
    weight = 0.3

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.gated() is not None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        j = gated_index(block)
        assert j is not None
        removed = block["extras"].pop(j)
        return "targets " + ", ".join(removed["targets"])


# -- custom ----------------------------------------------------------------------------------

def default_params(name: str, dim: int, rng: random.Random) -> dict[str, Any]:
    """Parameters for a registered component: its defaults, and for a required integer a
    width drawn from dim/8 .. dim/4. :class:`Skip` when the component needs anything else."""
    comp = components.get(name)
    if comp is None:
        raise Skip
    params: dict[str, Any] = {}
    for field, info in comp.params.model_fields.items():
        if not info.is_required():
            continue
        if info.annotation is int:
            params[field] = max(1, dim // rng.choice((8, 4)))
        elif info.annotation is float:
            params[field] = 1.0
        elif info.annotation is bool:
            params[field] = True
        else:
            raise Skip
    try:
        return comp.params.model_validate(params).model_dump(mode="json")
    except ValidationError:
        raise Skip from None


@register
class AddCustom(BlockMutation):
    name = "custom.add"
    weight = 0.4

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return bool(ctx.components) and len(block.extras) < 4

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        name = rng.choice(ctx.components)
        params = default_params(name, data["emb"]["dim"], rng)
        insert_extra(block, {"type": "custom", "name": name, "params": params}, rng)
        return name


@register
class TuneCustom(BlockMutation):
    """Scale one integer parameter of a custom component (its bottleneck width, say)."""

    name = "custom.tune"
    weight = 0.4

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return has(block, CustomExtra)

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        e = block["extras"][rng.choice(indices(block, "custom"))]
        ints = [k for k, v in e.get("params", {}).items()
                if isinstance(v, int) and not isinstance(v, bool)]
        if not ints:
            raise Skip
        key = rng.choice(ints)
        old = e["params"][key]
        e["params"][key] = choose_other(rng, [max(1, round(old * f)) for f in (0.5, 2.0)], old)
        return f"{e['name']}.{key} {old} -> {e['params'][key]}"


@register
class RemoveCustom(BlockMutation):
    name = "custom.remove"
    weight = 0.3

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return has(block, CustomExtra) and len(block.branches()) > 1

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        removed = remove_one(block, "custom", rng)
        prune_gate(block)
        return removed["name"]
