"""Which parent tensor each child tensor starts from, following block ids (not positions).

A child block with provenance ``(slot, id)`` inherits from the block holding ``id`` in
``parents[slot]``, wherever it sits there. Extras are paired by type (custom ones by name too)
and order of occurrence in the block, since inserting or removing an extra shifts indices.
Only names the parent has are mapped; shapes may differ (a resized layer) and the trainer copies
what matches and initialises the rest."""

from __future__ import annotations

from collections.abc import Sequence

from evotui.dsl.estimate import block_manifest, manifest
from evotui.dsl.model import BlockSpec, CustomExtra, ModelSpec

Provenance = Sequence[tuple[int, str] | None]
SHARED = ("tok_emb.", "final_norm.", "lm_head.")


def extra_kind(e: object) -> str:
    return f"custom:{e.name}" if isinstance(e, CustomExtra) else e.type  # type: ignore[attr-defined]


def extra_pairs(child: BlockSpec, parent: BlockSpec) -> dict[int, int]:
    """Child extra index -> parent extra index, by kind and order of occurrence."""
    by_kind: dict[str, list[int]] = {}
    for j, e in enumerate(parent.extras):
        by_kind.setdefault(extra_kind(e), []).append(j)
    seen: dict[str, int] = {}
    out = {}
    for j, e in enumerate(child.extras):
        kind = extra_kind(e)
        n = seen.get(kind, 0)
        seen[kind] = n + 1
        if n < len(by_kind.get(kind, [])):
            out[j] = by_kind[kind][n]
    return out


def block_pairs(child: BlockSpec, i: int, parent: BlockSpec, p: int, dim: int, norm: str,
                parent_names: set[str]) -> dict[str, str]:
    extras = extra_pairs(child, parent)
    own, src = f"blocks.{i}.", f"blocks.{p}."
    out = {}
    for name in block_manifest(child, f"blocks.{i}", dim, norm):
        rest = name[len(own):]
        if rest.startswith("extras."):
            _, j, tail = rest.split(".", 2)
            if int(j) not in extras:
                continue
            rest = f"extras.{extras[int(j)]}.{tail}"
        if src + rest in parent_names:
            out[name] = src + rest
    return out


def inheritance_map(child: ModelSpec, provenance: Provenance,
                    parents: Sequence[ModelSpec]) -> dict[str, tuple[int, str]]:
    """Child tensor name -> (parent slot, parent tensor name)."""
    if len(provenance) != len(child.blocks):
        raise ValueError(f"provenance has {len(provenance)} entries for {len(child.blocks)} "
                         "blocks")
    names = [set(manifest(p)) for p in parents]
    index = [{b.id: j for j, b in enumerate(p.blocks)} for p in parents]
    own = set(manifest(child))
    out: dict[str, tuple[int, str]] = {}
    for name in own:
        if name.startswith(SHARED) and name in names[0]:
            out[name] = (0, name)
    for i, (block, prov) in enumerate(zip(child.blocks, provenance, strict=True)):
        if prov is None:
            continue
        slot, bid = prov
        p = index[slot].get(bid)
        if p is None:
            continue
        pairs = block_pairs(block, i, parents[slot].blocks[p], p, child.emb.dim, child.norm,
                            names[slot])
        out |= {c: (slot, q) for c, q in pairs.items()}
    out |= recurrence_pairs(child, provenance, parents[0], names[0], own)
    return dict(sorted(out.items()))


def recurrence_pairs(child: ModelSpec, provenance: Provenance, parent: ModelSpec,
                     parent_names: set[str], child_names: set[str]
                     ) -> dict[str, tuple[int, str]]:
    """A loop adapter is inherited when its span holds exactly the blocks of a parent span."""
    spans = {}
    for r, rec in enumerate(parent.recurrences):
        spans[frozenset(b.id for b in parent.blocks[rec.start:rec.end + 1])] = r
    out = {}
    for r, rec in enumerate(child.recurrences):
        provs = provenance[rec.start:rec.end + 1]
        if any(p is None or p[0] != 0 for p in provs):
            continue
        q = spans.get(frozenset(p[1] for p in provs if p is not None))
        name, src = f"recurrences.{r}.adapter.weight", f"recurrences.{q}.adapter.weight"
        if q is not None and src in parent_names and name in child_names:
            out[name] = (0, src)
    return out
