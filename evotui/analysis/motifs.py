"""Architectural motifs of a genome, read from its spec (the JSON a run store keeps).

A motif is present or absent per candidate, so counts say how many candidates carry it.
Operator kinds group the mutation operators by the part of the genome they change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

SCALED_ROPE = ("linear", "ntk", "yarn")

OPERATOR_KINDS = {
    "attn": "attention", "ffn": "ffn / moe", "ssm": "ssm", "retro": "extras",
    "gated": "extras", "custom": "extras", "block": "blocks", "rec": "recurrence",
    "model": "model", "head": "model", "emb": "model", "norm": "model",
}


def motifs(spec: Mapping[str, Any]) -> set[str]:
    """The motifs of one genome (a ``ModelSpec`` as plain data)."""
    out: set[str] = set()
    for block in spec.get("blocks") or []:
        attn = block.get("attn")
        if attn:
            sparsity = attn.get("sparsity") or "none"
            out.add("attn: dense causal" if sparsity == "none" else f"attn: {sparsity}")
            kind = (attn.get("kind") or "GQA").upper()
            groups = attn.get("kv_groups") or 1
            if kind == "MQA":
                out.add("mqa (one kv head)")
            elif groups > 1:
                out.add("gqa (kv_groups > 1)")
            rope = attn.get("rope") or "none"
            if rope in SCALED_ROPE:
                out.add(f"rope: {rope}")
            elif rope == "none":
                out.add("attn without rope")
        else:
            out.add("attention-free block")
        ffn = block.get("ffn")
        if ffn and ffn.get("type") == "moe":
            out.add("moe")
            if ffn.get("shared"):
                out.add("moe shared experts")
        if block.get("ssm"):
            out.add("ssm (mamba2)")
        for extra in block.get("extras") or []:
            kind = extra.get("type")
            out.add(f"custom: {extra.get('name')}" if kind == "custom" else str(kind))
    if spec.get("recurrences"):
        out.add("recurrence")
    return out


def count(specs: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """How many of ``specs`` carry each motif."""
    total: Counter[str] = Counter()
    for spec in specs:
        total.update(motifs(spec))
    return total


def operator_kind(operator: str, parents: list[str]) -> str:
    """The kind of the operator that made a candidate: seed, crossover or a genome part."""
    if not parents:
        return "seed"
    if not operator:
        return "copy"
    first = operator.split("; ")[0]
    if first.startswith("crossover"):
        return "crossover"
    return OPERATOR_KINDS.get(first.split("(")[0].split(".")[0], "other")
