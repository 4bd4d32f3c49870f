"""Normalisation operator: every norm of the model is RMSNorm or LayerNorm."""

from __future__ import annotations

import random

from evotui.evolve.mutations.base import Data, Mutation, MutationContext, register


@register
class NormKind(Mutation):
    name = "norm.kind"
    weight = 0.3

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        old = data.get("norm", "rmsnorm")
        data["norm"] = "layernorm" if old == "rmsnorm" else "rmsnorm"
        ctx.note = f"{old} -> {data['norm']}"
