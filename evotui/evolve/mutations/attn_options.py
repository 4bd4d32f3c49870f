"""Attention operators for the kinds and options beyond plain softmax attention: the attention
family (softmax, LINEAR, MLA), MLA's latents, LINEAR's chunk, ALiBi, QK-norm, the output gate
and the top-k key selector. Switching the family keeps the projections it can (LINEAR shares
``wq``/``wk``/``wv``/``wo`` with softmax attention; MLA shares ``wo``), and the inherited
weights follow by name."""

from __future__ import annotations

import random

from evotui.dsl.model import BlockSpec, ModelSpec
from evotui.dsl.patterns import ALL_KNOBS
from evotui.evolve.mutations.attention import SOFTMAX, AttnMutation, set_kv_groups
from evotui.evolve.mutations.base import BlockMutation, Data, MutationContext, register
from evotui.evolve.mutations.helpers import choose_other

FAMILIES = ("softmax", "LINEAR", "MLA")
CHUNKS = (16, 32, 64, 128, 256)
LATENT_FRACTIONS = (0.125, 0.25, 0.5)
ROPE_DIMS = (8, 16, 32, 64)
TOPKS = (16, 32, 64, 128, 256)
WINDOWS = (8, 16, 32, 64)
GATES = ("none", "head", "channel")


def family(kind: str) -> str:
    return "softmax" if kind in SOFTMAX else kind


def to_softmax_only(a: Data) -> None:
    """Drop what only softmax attention has (pattern, ALiBi, dropout, key selector)."""
    for k in (*ALL_KNOBS, "sparsity", "alibi", "key_select", "dropout"):
        a.pop(k, None)


def latent_width(a: Data, rng: random.Random) -> int:
    width = a["heads"] * a["head_dim"]
    return max(8, round(width * rng.choice(LATENT_FRACTIONS) / 8) * 8)


@register
class Family(AttnMutation):
    """Switch a block's attention between softmax (MHA/GQA/MQA), LINEAR and MLA."""

    name = "attn.family"
    weight = 0.2

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a = block["attn"]
        old = a["kind"]
        new = choose_other(rng, FAMILIES, family(old))
        for k in ("kv_latent", "q_latent", "rope_dim", "chunk"):
            a.pop(k, None)
        if new == "softmax":
            a["kind"] = "GQA"
            set_kv_groups(a)
        elif new == "LINEAR":
            a["kind"] = "LINEAR"
            to_softmax_only(a)
            a["chunk"] = min(ctx.seq_len, rng.choice(CHUNKS))
            if old == "MLA":
                a["kv_groups"] = 1
        else:
            a["kind"] = "MLA"
            a.pop("kv_groups", None)
            a.pop("key_select", None)
            a.pop("qk_norm", None)
            a["kv_latent"] = latent_width(a, rng)
        return f"{old} -> {a['kind']}"


@register
class MLALatents(BlockMutation):
    """Tune MLA's KV latent, its query latent (on, off, resized) or its rotary width."""

    name = "attn.mla"
    weight = 0.3

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None and block.attn.kind == "MLA"

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a = block["attn"]
        knobs = ["kv_latent", "q_latent"] + (["rope_dim"] if a.get("rope") != "none" else [])
        knob = rng.choice(knobs)
        old = a.get(knob)
        if knob == "rope_dim":
            a[knob] = choose_other(rng, [r for r in ROPE_DIMS if r <= 2 * a["head_dim"]] or [2],
                                   old)
        elif knob == "q_latent" and old is not None and rng.random() < 0.4:
            del a[knob]
        else:
            base = old or latent_width(a, rng)
            options = [max(8, round(base * f / 8) * 8) for f in (0.5, 2.0)] if old else [base]
            a[knob] = choose_other(rng, options, old)
        return f"{knob} {old} -> {a.get(knob)}"


@register
class LinearChunk(BlockMutation):
    name = "attn.chunk"
    weight = 0.3

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None and block.attn.kind == "LINEAR"

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a = block["attn"]
        old = a.get("chunk")
        a["chunk"] = choose_other(rng, [c for c in CHUNKS if c <= ctx.seq_len] or [ctx.seq_len],
                                  old)
        return f"chunk {old} -> {a['chunk']}"


@register
class Alibi(BlockMutation):
    name = "attn.alibi"
    weight = 0.2

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None and block.attn.kind != "LINEAR"

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a = block["attn"]
        old = bool(a.get("alibi", False))
        a["alibi"] = not old
        return f"alibi {old} -> {a['alibi']}" + (f" (rope {a.get('rope', 'standard')})"
                                                  if a["alibi"] else "")


@register
class QKNorm(BlockMutation):
    name = "attn.qk_norm"
    weight = 0.2

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None and block.attn.kind != "MLA"

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a = block["attn"]
        old = bool(a.get("qk_norm", False))
        a["qk_norm"] = not old
        return f"qk_norm {old} -> {a['qk_norm']}"


@register
class OutputGate(AttnMutation):
    """Add, switch (per head / per channel) or remove the attention output gate."""

    name = "attn.gate"
    weight = 0.2

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a = block["attn"]
        old = a.get("gate", "none")
        a["gate"] = choose_other(rng, GATES, old)
        return f"gate {old} -> {a['gate']}"


# -- the top-k key selector --------------------------------------------------------------------

def fit(options: tuple[int, ...], n: int) -> list[int]:
    return [o for o in options if o <= n] or [max(1, n // 2)]


@register
class AddSelect(BlockMutation):
    name = "select.add"
    weight = 0.15

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        a = block.attn
        return a is not None and a.kind in SOFTMAX and a.key_select is None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        a, n = block["attn"], ctx.seq_len
        old = a.get("sparsity", "none")
        for k in (*ALL_KNOBS, "sparsity"):
            a.pop(k, None)
        a["key_select"] = sel = {"topk": rng.choice(fit(TOPKS, n)),
                                 "window": rng.choice(fit(WINDOWS, n)),
                                 "heads": rng.choice((1, 2, 4)), "dim": rng.choice((16, 32, 64))}
        return f"top {sel['topk']} + window {sel['window']} (was sparsity {old})"


@register
class TuneSelect(BlockMutation):
    name = "select.tune"
    weight = 0.2

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None and block.attn.key_select is not None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        sel, n = block["attn"]["key_select"], ctx.seq_len
        knob = rng.choice(("topk", "window", "heads", "dim", "distill"))
        old = sel.get(knob)
        options = {"topk": fit(TOPKS, n), "window": fit(WINDOWS, n), "heads": [1, 2, 4],
                   "dim": [16, 32, 64], "distill": [0.1, 0.5, 1.0, 2.0]}[knob]
        sel[knob] = choose_other(rng, options, old)
        return f"{knob} {old} -> {sel[knob]}"


@register
class RemoveSelect(BlockMutation):
    name = "select.remove"
    weight = 0.1

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.attn is not None and block.attn.key_select is not None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        old = block["attn"].pop("key_select")
        if rng.random() < 0.5:  # fall back to the window it kept, or to dense attention
            block["attn"]["sparsity"] = "sliding"
            block["attn"]["sw"] = min(ctx.seq_len, max(8, old["window"]))
            return f"top {old['topk']} -> sliding {block['attn']['sw']}"
        return f"top {old['topk']} -> dense"

