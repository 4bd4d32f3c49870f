"""Making children: mutation chains and block-splicing crossover, each validated in the run.

Every child is validated inside the run config, so what holds for a loaded config (windows
within ``data.seq_len``, derived widths resolved, ids unique, spans in range) holds for every
child. A child carries the operators that made it and, per block, the parent block it comes
from (``provenance``), which :func:`inheritance_map` turns into tensor names."""

from __future__ import annotations

import copy
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from evotui.dsl.loader import to_data
from evotui.dsl.model import ModelSpec
from evotui.dsl.run import RunConfig
from evotui.evolve.adaptive import AdaptiveWeights, op_name
from evotui.evolve.inheritance import inheritance_map
from evotui.evolve.keys import spec_key
from evotui.evolve.mutations import DECK, Mutation, MutationContext, Skip, new_id
from evotui.evolve.mutations.helpers import fit_block_to_width

Origin = tuple[int, str] | None
MAX_ATTEMPTS = 64  # operator draws per mutation step
MAX_FAILS = 4  # failed draws of one operator before it sits out the step
CROSSOVER_TRIES = 16


class VariationError(ValueError):
    """No valid child could be made (no operator applies, or nothing validated)."""


@dataclass
class Child:
    """``provenance[i]``: (parent slot, parent block id) of child block i; None = new block."""

    spec: ModelSpec
    ops: list[str] = field(default_factory=list)
    provenance: list[Origin] = field(default_factory=list)

    @property
    def operators(self) -> list[str]:
        """Operator names of ``ops`` (for adaptive weights)."""
        return [op_name(o) for o in self.ops]


def validate_model(cfg: RunConfig, model: Mapping[str, Any]) -> ModelSpec:
    """``model`` validated as the genome of ``cfg`` (raises pydantic's ValidationError)."""
    run = RunConfig.model_validate({"model": model, "train": cfg.train, "data": cfg.data,
                                    "evolution": cfg.evolution, "priors": cfg.priors})
    return run.model


def mutate(cfg: RunConfig, parent: ModelSpec, rng: random.Random, steps: int = 1,
           weights: Mapping[str, float] | None = None) -> Child:
    """A child made by a chain of ``steps`` mutations of ``parent``.

    Operators are drawn by weight (``weights`` overrides the deck's defaults; 0 disables one)
    among those applicable; a draw whose result does not validate or changes nothing is
    redrawn. Raises :class:`VariationError` when not one step succeeds."""
    ctx = MutationContext.from_config(cfg)
    ctx.taken = {b.id for b in parent.blocks if b.id is not None}
    origins: dict[str, str] = {}
    current, data = parent, to_data(parent)
    ops: list[str] = []
    for _ in range(max(1, steps)):
        step = _step(cfg, current, data, rng, ctx, weights or {})
        if step is None:
            break
        current, data, op = step
        origins |= ctx.copies
        ops.append(op)
    if not ops:
        raise VariationError(f"no mutation applies to model {parent.name or ''!s} "
                             f"({len(parent.blocks)} blocks) under this run config")
    return Child(current, ops, _provenance(current, parent, origins))


def _weight(m: Mutation, weights: Mapping[str, float]) -> float:
    return float(weights.get(m.name, m.weight))


def _step(cfg: RunConfig, current: ModelSpec, data: dict[str, Any], rng: random.Random,
          ctx: MutationContext, weights: Mapping[str, float]
          ) -> tuple[ModelSpec, dict[str, Any], str] | None:
    fails: Counter[str] = Counter()
    for _ in range(MAX_ATTEMPTS):
        deck = [m for m in DECK.values() if _weight(m, weights) > 0
                and fails[m.name] < MAX_FAILS and m.applicable(current, ctx)]
        if not deck:
            return None
        op = rng.choices(deck, [_weight(m, weights) for m in deck])[0]
        trial = copy.deepcopy(data)
        ctx.spec, ctx.note, ctx.copies = current, "", {}
        try:
            op.apply(trial, rng, ctx)
            child = validate_model(cfg, trial)
        except (Skip, ValidationError):
            fails[op.name] += 1
            continue
        child_data = to_data(child)
        if child_data == data:
            fails[op.name] += 1
            continue
        return child, child_data, f"{op.name}({ctx.note})" if ctx.note else op.name
    return None


def _provenance(child: ModelSpec, parent: ModelSpec, origins: Mapping[str, str]
                ) -> list[Origin]:
    ids = {b.id for b in parent.blocks}
    out: list[Origin] = []
    for b in child.blocks:
        bid, hops = b.id, 0
        while bid is not None and bid not in ids and hops <= len(origins):
            bid, hops = origins.get(bid), hops + 1
        out.append((0, bid) if bid in ids else None)
    return out


def crossover(cfg: RunConfig, a: ModelSpec, b: ModelSpec, rng: random.Random) -> Child:
    """A prefix of ``a``'s blocks and a suffix of ``b``'s, cut at one relative depth.

    Embedding, head, norm and width come from ``a``, as do ``a``'s recurrence spans lying
    wholly in the prefix. Blocks from ``b`` whose id ``a`` uses get fresh ids; provenance keeps
    (slot 0 or 1, original id)."""
    na, nb = len(a.blocks), len(b.blocks)
    a_data, b_data = to_data(a), to_data(b)
    last: ValidationError | None = None
    for _ in range(CROSSOVER_TRIES):
        t = rng.random()
        ca = min(na, max(1, round(t * na)))
        cb = min(nb - 1, max(0, round(t * nb)))
        data, provenance = _splice(a_data, b_data, ca, cb, rng)
        try:
            child = validate_model(cfg, data)
        except ValidationError as e:
            last = e
            continue
        op = f"crossover(a blocks 0..{ca - 1} + b blocks {cb}..{nb - 1})"
        return Child(child, [op], provenance)
    raise VariationError(f"no crossover of these parents validates: {last}")


def _splice(a: dict[str, Any], b: dict[str, Any], ca: int, cb: int, rng: random.Random
            ) -> tuple[dict[str, Any], list[Origin]]:
    data = copy.deepcopy({k: v for k, v in a.items() if k != "blocks"})
    blocks = copy.deepcopy(a["blocks"][:ca])
    provenance: list[Origin] = [(0, blk["id"]) for blk in blocks]
    taken = {blk["id"] for blk in a["blocks"]}
    dim, b_dim = a["emb"]["dim"], b["emb"]["dim"]
    for blk in copy.deepcopy(b["blocks"][cb:]):
        provenance.append((1, blk["id"]))
        if blk["id"] in taken:
            blk["id"] = new_id(rng, taken)
        taken.add(blk["id"])
        if dim != b_dim:
            fit_block_to_width(blk, dim, b_dim)
        blocks.append(blk)
    data["blocks"] = blocks
    data["recurrences"] = [r for r in a.get("recurrences", []) if r["end"] < ca]
    return data, provenance


def compose(first: Child, second: Child) -> Child:
    """``second`` was made from ``first.spec`` (not yet evaluated): the child of both steps,
    with provenance pointing at ``first``'s parents."""
    index = {b.id: i for i, b in enumerate(first.spec.blocks)}
    provenance: list[Origin] = []
    for p in second.provenance:
        i = index.get(p[1]) if p is not None and p[0] == 0 else None
        provenance.append(first.provenance[i] if i is not None else None)
    return Child(second.spec, first.ops + second.ops, provenance)


__all__ = ["AdaptiveWeights", "Child", "VariationError", "compose", "crossover",
           "inheritance_map", "mutate", "spec_key", "validate_model"]
