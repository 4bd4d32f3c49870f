"""Attention operators: heads and head width, KV sharing, RoPE, sparsity patterns, presence."""

from __future__ import annotations

import random

from evotui.dsl.model import SCALED_ROPE, BlockSpec, ModelSpec
from evotui.dsl.patterns import ALL_KNOBS, OPTIONAL_KNOBS, PATTERNS, REQUIRED_KNOBS
from evotui.dsl.run import derive_window
from evotui.evolve.mutations.base import BlockMutation, Data, MutationContext, Skip, register
from evotui.evolve.mutations.helpers import branches, choose_other, divisors, prune_gate

ROPE_KINDS = ("standard", "linear", "ntk", "yarn", "none")
SOFTMAX = ("MHA", "GQA", "MQA")
ROPE_FACTORS = (1.5, 2.0, 4.0, 8.0, 16.0)
THETA_FACTORS = (0.5, 0.75, 1.5, 2.0)
HEAD_DIMS = tuple(range(8, 257, 8))
DEFAULT_WINDOW_SCALE = 4.0
SIZES = (8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048)
# Smallest value a jittered knob takes (a 1-token window or block attends to itself only).
KNOB_FLOOR = {"sw": 8, "block_size": 8, "block_stride": 4, "global_stride": 4, "dilation": 2}


def inner_distance(inner: int, dim: int) -> int:
    """How far heads x head_dim lies outside the sensible range [dim/2, 2 dim] (0 inside)."""
    lo, hi = dim // 2, 2 * dim
    return max(0, lo - inner, inner - hi)


def sensible(inner: int, current_inner: int, dim: int) -> bool:
    """Inside the range, or at least closer to it than the current width."""
    d = inner_distance(inner, dim)
    return d == 0 or d < inner_distance(current_inner, dim)


def set_kv_groups(attn: Data, target: int | None = None) -> None:
    """kv_groups consistent with kind and heads (GQA: the divisor nearest ``target``)."""
    h = attn["heads"]
    if attn["kind"] in ("MHA", "MLA"):
        attn["kv_groups"] = 1
    elif attn["kind"] == "MQA":
        attn["kv_groups"] = h
    else:
        want = target or attn.get("kv_groups") or 1
        attn["kv_groups"] = min(divisors(h), key=lambda g: (abs(g - want), g))


class AttnMutation(BlockMutation):
    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None


@register
class Heads(AttnMutation):
    name = "attn.heads"

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a, dim = block["attn"], data["emb"]["dim"]
        h, hd = a["heads"], a["head_dim"]
        options = [n for n in {h - 2, h - 1, h + 1, h + 2, h // 2, 2 * h, round(h * 1.5)}
                   if 1 <= n <= 128 and n != h and sensible(n * hd, h * hd, dim)]
        if not options:
            raise Skip
        a["heads"] = rng.choice(sorted(options))
        set_kv_groups(a)
        return f"heads {h} -> {a['heads']}"


@register
class HeadDim(AttnMutation):
    name = "attn.head_dim"

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a, dim = block["attn"], data["emb"]["dim"]
        h, hd = a["heads"], a["head_dim"]
        near = {hd - 16, hd - 8, hd + 8, hd + 16, hd // 2, 2 * hd}
        options = [n for n in near if n in HEAD_DIMS and n != hd and sensible(h * n, h * hd, dim)]
        if not options:
            raise Skip
        a["head_dim"] = rng.choice(sorted(options))
        return f"head_dim {hd} -> {a['head_dim']}"


@register
class KVGroups(AttnMutation):
    name = "attn.kv_groups"

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None and block.attn.kind in ("GQA", "LINEAR") and (
            block.attn.heads > 1)

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a = block["attn"]
        old = a["kv_groups"]
        a["kv_groups"] = choose_other(rng, divisors(a["heads"]), old)
        return f"kv_groups {old} -> {a['kv_groups']}"


@register
class Kind(AttnMutation):
    """MHA / GQA / MQA (switching the attention family is ``attn.family``)."""

    name = "attn.kind"

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None and block.attn.kind in SOFTMAX

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a = block["attn"]
        old = a["kind"]
        inner = [g for g in divisors(a["heads"]) if 1 < g < a["heads"]]
        kinds = ["MHA", "MQA"] + (["GQA"] if inner else [])
        a["kind"] = choose_other(rng, kinds, old)
        if a["kind"] == "GQA":
            a["kv_groups"] = rng.choice(inner)
        set_kv_groups(a)
        return f"{old} -> {a['kind']}"


@register
class RopeKind(AttnMutation):
    name = "attn.rope"

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a = block["attn"]
        old = a.get("rope", "standard")
        a["rope"] = new = choose_other(rng, ROPE_KINDS, old)
        if new == "none":
            a.pop("rope_theta", None)
            a.pop("rope_factor", None)
            a.pop("rope_dim", None)
            return f"rope {old} -> none"
        if a["head_dim"] % 2 and a["kind"] != "MLA":
            raise Skip
        a.setdefault("rope_theta", float(ctx.rope_theta_default))
        if new in SCALED_ROPE:
            a.setdefault("rope_factor", rng.choice((2.0, 4.0)))
        else:
            a.pop("rope_factor", None)
        return f"rope {old} -> {new}"


@register
class RopeTheta(AttnMutation):
    name = "attn.rope_theta"
    weight = 0.5

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None and block.attn.rope != "none"

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a = block["attn"]
        old = a.get("rope_theta", ctx.rope_theta_default)
        a["rope_theta"] = float(min(1e7, max(100.0, round(old * rng.choice(THETA_FACTORS)))))
        return f"rope_theta {old:g} -> {a['rope_theta']:g}"


@register
class RopeFactor(AttnMutation):
    name = "attn.rope_factor"
    weight = 0.5

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None and block.attn.rope in SCALED_ROPE

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a = block["attn"]
        old = a.get("rope_factor")
        a["rope_factor"] = choose_other(rng, ROPE_FACTORS, old)
        return f"rope_factor {old} -> {a['rope_factor']}"


def sizes_upto(n: int, lo: int = 1) -> list[int]:
    return [s for s in SIZES if lo <= s <= n]


def default_knob(knob: str, a: Data, rng: random.Random, ctx: MutationContext) -> int:
    """A valid starting value for a pattern knob (the current one when it is set)."""
    n = ctx.seq_len
    if a.get(knob) is not None:
        return min(a[knob], n)
    if knob == "sw":
        return derive_window(n, ctx.window_scale or DEFAULT_WINDOW_SCALE)
    if knob == "dilation":
        return min(n, rng.choice((2, 3, 4)))
    options = sizes_upto(n, lo=8) or [n]
    return rng.choice(options)


@register
class Sparsity(AttnMutation):
    name = "attn.sparsity"

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        a = block.attn
        return a is not None and a.kind != "LINEAR" and a.key_select is None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a = block["attn"]
        old = a.get("sparsity", "none")
        new = choose_other(rng, PATTERNS, old)
        old_knobs = {k: v for k in ALL_KNOBS if (v := a.pop(k, None)) is not None}
        a["sparsity"] = new
        wanted = list(REQUIRED_KNOBS[new])
        wanted += [k for k in OPTIONAL_KNOBS[new] if k in old_knobs or rng.random() < 0.3]
        for knob in wanted:
            a[knob] = default_knob(knob, old_knobs, rng, ctx)
        fix_block_knobs(a, ctx.seq_len)
        return f"sparsity {old} -> {new}"


def fix_block_knobs(a: Data, n: int) -> None:
    """Keep block knobs consistent: a plain block pattern strides at most its block size."""
    if a.get("block_stride") is not None and a["sparsity"] == "block":
        a["block_stride"] = min(a["block_stride"], a["block_size"])
    for k in ALL_KNOBS:
        if a.get(k) is not None:
            a[k] = min(a[k], n)


@register
class Knob(AttnMutation):
    """Jitter one knob of the block's pattern, or add / drop an optional one."""

    name = "attn.knob"

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None and block.attn.sparsity != "none"

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a, n = block["attn"], ctx.seq_len
        kind = a["sparsity"]
        knob = rng.choice(REQUIRED_KNOBS[kind] + OPTIONAL_KNOBS[kind])
        old = a.get(knob)
        if knob in OPTIONAL_KNOBS[kind] and (old is None or rng.random() < 0.25):
            if old is None:
                a[knob] = default_knob(knob, {}, rng, ctx)
            else:
                del a[knob]
        elif knob == "dilation":
            a[knob] = choose_other(rng, [d for d in (old - 1, old + 1, 2 * old) if 2 <= d <= n],
                                   old)
        else:
            factor = rng.choice((0.5, 0.75, 1.5, 2.0))
            a[knob] = max(min(KNOB_FLOOR[knob], old), min(n, round(old * factor)))
        fix_block_knobs(a, n)
        if a.get(knob) == old:
            raise Skip
        return f"{knob} {old} -> {a.get(knob)}"


def attn_template(data: Data, rng: random.Random) -> Data:
    """A copy of another block's attention, else a plain one sized from the model width."""
    others = [b["attn"] for b in data["blocks"] if b.get("attn") is not None]
    if others:
        return dict(rng.choice(others))
    dim = data["emb"]["dim"]
    head_dim = 64 if dim >= 64 else max(8, dim // 2 // 2 * 2)
    return {"kind": "MHA", "heads": max(1, dim // head_dim), "head_dim": head_dim}


@register
class AddAttn(BlockMutation):
    name = "attn.add"
    weight = 0.5

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        block["attn"] = attn_template(data, rng)
        return f"{block['attn']['kind']} x{block['attn']['heads']}"


@register
class RemoveAttn(BlockMutation):
    name = "attn.remove"
    weight = 0.3

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None and len(block.branches()) > 1

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        del block["attn"]
        prune_gate(block)
        return "kept " + ", ".join(branches(block))
