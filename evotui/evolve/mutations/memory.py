"""Operators on the memory extras (memory_tokens, chunk_memory, assoc_memory) and the branch
modifiers layer_scale and branch_router: add, tune and remove each. A removal prunes the
gates, scales and routers that named the removed branch."""

from __future__ import annotations

import random
from typing import Any

from evotui.dsl.model import BlockSpec, ModelSpec
from evotui.evolve.mutations.base import BlockMutation, Data, MutationContext, Skip, register
from evotui.evolve.mutations.extras import GATING_WEIGHTS, indices, insert_extra, remove_one
from evotui.evolve.mutations.helpers import branches, choose_other, prune_gate

HEADS = (1, 2, 4, 8)
HEAD_DIMS = (16, 32, 64)
TOKENS = (4, 8, 16, 32, 64)
CHUNKS = (8, 16, 32, 64, 128)
SCALE_INITS = (1e-4, 1e-2, 0.1, 0.5, 1.0)
TEMPERATURES = (0.5, 1.0, 2.0)


def count(block: BlockSpec, kind: str) -> int:
    return sum(e.type == kind for e in block.extras)


def heads_and_width(dim: int, rng: random.Random) -> dict[str, Any]:
    hd = rng.choice([h for h in HEAD_DIMS if h <= max(16, dim // 2)])
    return {"heads": rng.choice([h for h in HEADS if h * hd <= dim] or [1]), "head_dim": hd}


def fit(options: tuple[int, ...], n: int) -> list[int]:
    return [o for o in options if o <= n] or [max(1, n // 2)]


# -- memory extras: one add / tune / remove per kind --------------------------------------------

class AddMemory(BlockMutation):
    kind = ""
    weight = 0.15

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return count(block, self.kind) == 0 and len(block.extras) < 4

    def sample(self, dim: int, n: int, rng: random.Random) -> dict[str, Any]:
        raise NotImplementedError

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        extra = {"type": self.kind, **heads_and_width(data["emb"]["dim"], rng),
                 "gating_weight": rng.choice(GATING_WEIGHTS)}
        extra |= self.sample(data["emb"]["dim"], ctx.seq_len, rng)
        insert_extra(block, extra, rng)
        return ", ".join(f"{k} {v}" for k, v in extra.items() if k != "type")


class TuneMemory(BlockMutation):
    kind = ""
    knobs: tuple[str, ...] = ()
    weight = 0.2

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return count(block, self.kind) > 0

    def options(self, knob: str, e: Data, dim: int, n: int) -> list[Any]:
        if knob == "heads":
            return [h for h in HEADS if h * e["head_dim"] <= 2 * dim]
        if knob == "head_dim":
            return list(HEAD_DIMS)
        if knob == "gating_weight":
            return list(GATING_WEIGHTS)
        raise NotImplementedError(knob)

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        e = block["extras"][rng.choice(indices(block, self.kind))]
        knob = rng.choice(("heads", "head_dim", "gating_weight", *self.knobs))
        old = e.get(knob)
        options = self.options(knob, e, data["emb"]["dim"], ctx.seq_len)
        if not options:
            raise Skip
        e[knob] = choose_other(rng, options, old)
        return f"{knob} {old} -> {e[knob]}"


class RemoveMemory(BlockMutation):
    kind = ""
    weight = 0.1

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return count(block, self.kind) > 0 and len(block.branches()) > 1

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        removed = remove_one(block, self.kind, rng)
        prune_gate(block)
        return f"{removed['heads']} x {removed['head_dim']}"


@register
class AddMemoryTokens(AddMemory):
    name, kind = "memory_tokens.add", "memory_tokens"

    def sample(self, dim: int, n: int, rng: random.Random) -> dict[str, Any]:
        return {"tokens": rng.choice(TOKENS)}


@register
class TuneMemoryTokens(TuneMemory):
    name, kind, knobs = "memory_tokens.tune", "memory_tokens", ("tokens",)

    def options(self, knob: str, e: Data, dim: int, n: int) -> list[Any]:
        return list(TOKENS) if knob == "tokens" else super().options(knob, e, dim, n)


@register
class RemoveMemoryTokens(RemoveMemory):
    name, kind = "memory_tokens.remove", "memory_tokens"


@register
class AddChunkMemory(AddMemory):
    name, kind = "chunk_memory.add", "chunk_memory"

    def sample(self, dim: int, n: int, rng: random.Random) -> dict[str, Any]:
        chunk = rng.choice(fit(CHUNKS, n))
        return {"chunk": chunk, "stride": rng.choice(sorted({max(1, chunk // 2), chunk}))}


@register
class TuneChunkMemory(TuneMemory):
    name, kind, knobs = "chunk_memory.tune", "chunk_memory", ("chunk", "stride")

    def options(self, knob: str, e: Data, dim: int, n: int) -> list[Any]:
        if knob == "chunk":
            return fit(CHUNKS, n)
        if knob == "stride":
            return sorted({max(1, e["chunk"] // 2), e["chunk"], min(n, 2 * e["chunk"])})
        return super().options(knob, e, dim, n)


@register
class RemoveChunkMemory(RemoveMemory):
    name, kind = "chunk_memory.remove", "chunk_memory"


@register
class AddAssocMemory(AddMemory):
    name, kind = "assoc_memory.add", "assoc_memory"

    def sample(self, dim: int, n: int, rng: random.Random) -> dict[str, Any]:
        return {"chunk": rng.choice(fit(CHUNKS, n))}


@register
class TuneAssocMemory(TuneMemory):
    name, kind, knobs = "assoc_memory.tune", "assoc_memory", ("chunk",)

    def options(self, knob: str, e: Data, dim: int, n: int) -> list[Any]:
        return fit(CHUNKS, n) if knob == "chunk" else super().options(knob, e, dim, n)


@register
class RemoveAssocMemory(RemoveMemory):
    name, kind = "assoc_memory.remove", "assoc_memory"


# -- layer_scale and branch_router ------------------------------------------------------------

def modifier(block: Data, kind: str) -> Data | None:
    return next((e for e in block.get("extras", []) if e["type"] == kind), None)


def present(block: Data) -> list[str]:
    return list(dict.fromkeys(branches(block)))


def retarget(e: Data, block: Data, rng: random.Random, least: int) -> None:
    have = present(block)
    targets = [t for t in e["targets"] if t in have]
    missing = [t for t in have if t not in targets]
    if missing and (len(targets) <= least or rng.random() < 0.5):
        targets.append(rng.choice(missing))
    elif len(targets) > least:
        targets.remove(rng.choice(targets))
    else:
        raise Skip
    e["targets"] = targets


@register
class AddLayerScale(BlockMutation):
    name = "layer_scale.add"
    weight = 0.15

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.layer_scale() is None and bool(block.branches())

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        have = present(block)
        targets = rng.sample(have, rng.randint(1, len(have)))
        block.setdefault("extras", []).append({
            "type": "layer_scale", "targets": targets, "init": rng.choice(SCALE_INITS)})
        return "targets " + ", ".join(targets)


@register
class TuneLayerScale(BlockMutation):
    name = "layer_scale.tune"
    weight = 0.15

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.layer_scale() is not None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        e = modifier(block, "layer_scale")
        assert e is not None
        knob = rng.choice(("targets", "init", "learnable"))
        old = e.get(knob)
        if knob == "targets":
            retarget(e, block, rng, 1)
        elif knob == "init":
            e["init"] = choose_other(rng, SCALE_INITS, old)
        else:
            e["learnable"] = not e.get("learnable", True)
        return f"{knob} {old} -> {e[knob]}"


@register
class RemoveLayerScale(BlockMutation):
    name = "layer_scale.remove"
    weight = 0.15

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.layer_scale() is not None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        e = modifier(block, "layer_scale")
        block["extras"].remove(e)
        return "targets " + ", ".join(e["targets"])


@register
class AddRouter(BlockMutation):
    name = "router.add"
    weight = 0.15

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.router() is None and len(set(block.branches())) >= 2

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        have = present(block)
        targets = rng.sample(have, rng.randint(2, len(have)))
        extra: Data = {"type": "branch_router", "targets": targets,
                       "temperature": rng.choice(TEMPERATURES)}
        if rng.random() < 0.3:
            extra["hidden"] = max(8, data["emb"]["dim"] // 8)
        block.setdefault("extras", []).append(extra)
        return "mixes " + ", ".join(targets)


@register
class TuneRouter(BlockMutation):
    name = "router.tune"
    weight = 0.15

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.router() is not None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        e = modifier(block, "branch_router")
        assert e is not None
        knob = rng.choice(("targets", "temperature", "hidden"))
        old = e.get(knob)
        if knob == "targets":
            retarget(e, block, rng, 2)
        elif knob == "temperature":
            e["temperature"] = choose_other(rng, TEMPERATURES, old)
        elif old is None:
            e["hidden"] = max(8, data["emb"]["dim"] // 8)
        else:
            del e["hidden"]
        return f"{knob} {old} -> {e.get(knob)}"


@register
class RemoveRouter(BlockMutation):
    name = "router.remove"
    weight = 0.15

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.router() is not None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        e = modifier(block, "branch_router")
        block["extras"].remove(e)
        return "unmixed " + ", ".join(e["targets"])
