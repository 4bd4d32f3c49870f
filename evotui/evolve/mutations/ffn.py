"""Feed-forward operators: width, activation, dense <-> MoE, the MoE's experts and router."""

from __future__ import annotations

import random

from evotui.dsl.model import BlockSpec, DenseFFN, ModelSpec, MoEFFN
from evotui.evolve.mutations.base import BlockMutation, Data, MutationContext, register
from evotui.evolve.mutations.helpers import branches, choose_other, prune_gate, round_to, scaled

ACTIVATIONS = ("silu", "gelu", "relu", "swiglu")
EXPERTS = (2, 4, 8, 16, 32, 64)
WIDTH_FACTORS = (0.5, 0.75, 1.25, 1.5, 2.0)
EXPERT_QUANTUM = 8  # expert widths stay multiples of 8 (tensor-core friendly)


def dense_quantum(hidden: int) -> int:
    return 32 if hidden >= 64 else 8


def moe_hidden(total: float, n_experts: int) -> int:
    """A routed width near ``total`` that splits evenly into ``n_experts`` experts."""
    return n_experts * round_to(total / n_experts, EXPERT_QUANTUM)


class DenseMutation(BlockMutation):
    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return isinstance(block.ffn, DenseFFN)


class MoEMutation(BlockMutation):
    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return isinstance(block.ffn, MoEFFN)


@register
class Hidden(BlockMutation):
    name = "ffn.hidden"

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.ffn is not None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        f, dim = block["ffn"], data["emb"]["dim"]
        old = f["hidden"]
        if f["type"] == "moe":
            n = f["n_experts"]
            expert = scaled(rng, old // n, WIDTH_FACTORS, EXPERT_QUANTUM,
                            max(EXPERT_QUANTUM, 4 * dim), EXPERT_QUANTUM)
            f["hidden"] = expert * n
        else:
            q = dense_quantum(old)
            f["hidden"] = scaled(rng, old, WIDTH_FACTORS, q, round_to(16 * dim, q), q)
        return f"hidden {old} -> {f['hidden']}"


@register
class Activation(BlockMutation):
    name = "ffn.activation"
    weight = 0.5

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.ffn is not None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        f = block["ffn"]
        old = f.get("activation", "swiglu")
        f["activation"] = choose_other(rng, ACTIVATIONS, old)
        return f"{old} -> {f['activation']}"


@register
class DenseToMoE(DenseMutation):
    name = "ffn.dense_to_moe"
    weight = 0.7

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        f = block["ffn"]
        n = rng.choice((4, 8, 16))
        total = f["hidden"] * rng.choice((1, 2))
        block["ffn"] = {
            "type": "moe",
            "hidden": moe_hidden(total, n),
            "n_experts": n,
            "k": rng.choice((1, 2)),
            "shared": rng.choice((0, 1)),
            "activation": f.get("activation", "swiglu"),
        }
        m = block["ffn"]
        return f"dense {f['hidden']} -> moe {m['hidden']} ({n} experts, top-{m['k']})"


@register
class MoEToDense(MoEMutation):
    name = "ffn.moe_to_dense"
    weight = 0.5

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        f = block["ffn"]
        expert = f["hidden"] // f["n_experts"]
        active = expert * (f["k"] + f.get("shared", 0))
        width = rng.choice((active, f["hidden"]))
        block["ffn"] = {"type": "dense", "hidden": round_to(width, dense_quantum(width)),
                        "activation": f.get("activation", "swiglu")}
        return f"moe {f['hidden']} -> dense {block['ffn']['hidden']}"


@register
class Experts(MoEMutation):
    """Change the expert count, keeping the routed width (finer or coarser experts)."""

    name = "ffn.n_experts"

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        f = block["ffn"]
        old = f["n_experts"]
        near = [e for e in EXPERTS if old // 2 <= e <= old * 2]
        f["n_experts"] = n = choose_other(rng, near, old)
        f["hidden"] = moe_hidden(f["hidden"], n)
        f["k"] = min(f["k"], n)
        return f"n_experts {old} -> {n}"


@register
class TopK(MoEMutation):
    name = "ffn.k"

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        f = block["ffn"]
        old = f["k"]
        f["k"] = choose_other(rng, [k for k in (old - 1, old + 1) if 1 <= k <= f["n_experts"]],
                              old)
        return f"k {old} -> {f['k']}"


@register
class Shared(MoEMutation):
    name = "ffn.shared"
    weight = 0.5

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        f = block["ffn"]
        old = f.get("shared", 0)
        f["shared"] = choose_other(rng, (0, 1, 2), old)
        return f"shared {old} -> {f['shared']}"


@register
class Router(MoEMutation):
    """Router kind (softmax / sigmoid) or temperature."""

    name = "ffn.router"
    weight = 0.5

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        f = block["ffn"]
        if rng.random() < 0.5:
            old = f.get("router", "softmax")
            f["router"] = choose_other(rng, ("softmax", "sigmoid"), old)
            return f"router {old} -> {f['router']}"
        old_t = f.get("router_temperature", 1.0)
        f["router_temperature"] = choose_other(rng, (0.5, 0.7, 1.0, 1.5, 2.0), old_t)
        return f"router_temperature {old_t} -> {f['router_temperature']}"


@register
class Capacity(MoEMutation):
    """Capacity factor or load-balance weight."""

    name = "ffn.capacity"
    weight = 0.3

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        f = block["ffn"]
        if rng.random() < 0.5:
            old = f.get("capacity_factor", 1.25)
            f["capacity_factor"] = choose_other(rng, (1.0, 1.25, 1.5, 2.0), old)
            return f"capacity_factor {old} -> {f['capacity_factor']}"
        old_b = f.get("balance")
        f["balance"] = choose_other(rng, (0.001, 0.005, 0.01, 0.02, 0.05), old_b)
        return f"balance {old_b} -> {f['balance']}"


@register
class AddFFN(BlockMutation):
    name = "ffn.add"
    weight = 0.5

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.ffn is None

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        others = [b["ffn"] for b in data["blocks"] if b.get("ffn") is not None]
        if others:
            block["ffn"] = dict(rng.choice(others))
        else:
            dim = data["emb"]["dim"]
            block["ffn"] = {"type": "dense", "hidden": round_to(8 * dim / 3, 8),
                            "activation": "swiglu"}
        return f"{block['ffn']['type']} {block['ffn']['hidden']}"


@register
class RemoveFFN(BlockMutation):
    name = "ffn.remove"
    weight = 0.3

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        return block.ffn is not None and len(block.branches()) > 1

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        del block["ffn"]
        prune_gate(block)
        return "kept " + ", ".join(branches(block))
