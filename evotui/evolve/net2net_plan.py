"""Function-preserving inheritance (Net2Net): which transform each child tensor starts from.

:func:`inheritance_map` pairs child tensors with parent tensors by block id; a pair whose
shapes differ used to start fresh. :func:`net2net_plan` says, per child tensor, how to start it
so that the child computes what its parent computed (pure data, no torch; the torch side is
:mod:`evotui.train.net2net`):

* absent from the plan: copied as is (equal shapes) or fresh (nothing to start from);
* ``{"op": "widen", "dims": [{"dim", "unit", "map", "split"}], "perturb"?}``: along ``dim``,
  child unit ``j`` (a slice of ``unit`` rows, e.g. one head of ``head_dim`` rows) is parent
  unit ``map[j]``; with ``split`` the copies of one parent unit share its value (divided by
  its number of copies), so a sum over the units is unchanged. One map per unit group (a
  block's FFN hidden units, its heads, its kv heads, its experts) is shared by every tensor of
  that group. ``perturb``: ``{"dim", "from", "scale"}`` adds noise of ``scale`` times the
  tensor's std to the units at index ``from`` and after (new experts, so they can diverge);
* ``{"op": "zero"}``: a new block's residual output projections (attention ``wo``, FFN ``w2``,
  SSM ``out_proj``), so the block starts as the identity. A new block is one with no parent
  block (``block.insert``) or a copy of a block the child also keeps (``block.duplicate``).

What is preserved exactly: a dense FFN's wider hidden layer (any activation, SwiGLU included),
a MoE's wider expert hidden layer and shared expert, more heads and more kv heads of softmax
attention with the same ``head_dim`` (when the new kv-head count is a multiple of the old and
heads do not shrink), new blocks. What is only approximate: more experts (exact for ``k: 1``;
with ``k > 1`` a token may pick a copy beside its original; capacity changes with the count),
ALiBi (its slopes depend on the head count). What stays fresh, as before: narrower layers, a
changed model width or ``head_dim``, MLA and other tensors whose units this module does not
know.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from evotui.dsl.estimate import manifest
from evotui.dsl.model import ModelSpec, MoEFFN
from evotui.evolve.inheritance import Provenance

Transform = dict[str, Any]
ZERO: Transform = {"op": "zero"}
EXPERT_NOISE = 1e-3  # of the copied expert's std: small enough to keep the loss, breaks ties
OUTPUTS = ("attn.wo.weight", "ffn.w2.weight", "ffn.w2", "ffn.shared.w2.weight",
           "ssm.out_proj.weight")


def net2net_plan(child: ModelSpec, provenance: Provenance, parents: Sequence[ModelSpec],
                 mapping: Mapping[str, tuple[int, str]], seed: int = 0
                 ) -> dict[str, Transform]:
    """Child tensor name -> transform, for the tensors not copied as they are (see above).
    ``mapping`` is :func:`inheritance_map`'s; ``seed`` fixes which units are copied."""
    own = {k: v.shape for k, v in manifest(child).items()}
    shapes = [{k: v.shape for k, v in manifest(p).items()} for p in parents]
    plan: dict[str, Transform] = {}
    groups: dict[str, list[int] | None] = {}
    rng = random.Random(seed)
    for i, prov in enumerate(provenance):
        if _is_new(child, i, prov):
            for name in own:
                if name.startswith(f"blocks.{i}.") and name.endswith(OUTPUTS):
                    plan[name] = dict(ZERO)
                    continue
    for name, (slot, src) in mapping.items():
        if name in plan or own[name] == shapes[slot].get(src):
            continue
        t = _widen(name, child, parents[slot], src, own[name], shapes[slot][src], groups, rng)
        if t is not None:
            plan[name] = t
    return dict(sorted(plan.items()))


def counts(child: ModelSpec, parents: Sequence[ModelSpec],
           mapping: Mapping[str, tuple[int, str]], plan: Mapping[str, Transform]
           ) -> dict[str, int]:
    """How the child's tensors start: ``exact`` copies (same shape, no transform),
    ``transformed`` (widened, or zeroed for an identity start) and ``fresh``; what the
    trainer counts when it applies the plan."""
    own = {k: v.shape for k, v in manifest(child).items()}
    shapes = [{k: v.shape for k, v in manifest(p).items()} for p in parents]
    transformed = sum(1 for n in own if n in plan)
    exact = sum(1 for n, (slot, src) in mapping.items()
                if n not in plan and own.get(n) == shapes[slot].get(src))
    return {"exact": exact, "transformed": transformed,
            "fresh": len(own) - exact - transformed}


def _is_new(child: ModelSpec, i: int, prov: tuple[int, str] | None) -> bool:
    """Block ``i`` has no parent block, or copies one that the child also keeps as is."""
    if prov is None:
        return True
    own_id = child.blocks[i].id
    return own_id != prov[1] and any(b.id == prov[1] for b in child.blocks)


def _block(name: str) -> tuple[int, str]:
    _, i, rest = name.split(".", 2)
    return int(i), rest


def _grow(n_parent: int, n_child: int, rng: random.Random) -> list[int] | None:
    """Units 0..n_parent-1 kept in place, the rest copies of random ones; None if narrower."""
    if n_child < n_parent:
        return None
    return list(range(n_parent)) + [rng.randrange(n_parent) for _ in range(n_child - n_parent)]


def _group(groups: dict[str, list[int] | None], key: str, make: Any) -> list[int] | None:
    if key not in groups:
        groups[key] = make()
    return groups[key]


def _widen(name: str, child: ModelSpec, parent: ModelSpec, src: str, cs: tuple[int, ...],
           ps: tuple[int, ...], groups: dict[str, list[int] | None], rng: random.Random
           ) -> Transform | None:
    if name.startswith("blocks.") and src.startswith("blocks."):
        i, rest = _block(name)
        p, _ = _block(src)
        cb, pb = child.blocks[i], parent.blocks[p]
        if rest.startswith("ffn."):
            return _ffn(f"{i}", rest, cb.ffn, pb.ffn, cs, ps, groups, rng)
        if rest.startswith("attn.") and cb.attn is not None and pb.attn is not None:
            return _attn(f"{i}", rest, cb.attn, pb.attn, cs, ps, groups, rng)
    return None


def _dims(cs: tuple[int, ...], ps: tuple[int, ...], spec: Sequence[tuple[int, int, list[int]
          | None, bool]]) -> Transform | None:
    """A widen transform from ``(dim, unit, map, split)``; None when a map is missing or the
    maps do not account for every differing dimension."""
    dims = []
    covered = set()
    for dim, unit, m, split in spec:
        if m is None or dim >= min(len(cs), len(ps)) or len(m) * unit != cs[dim] or max(
                m, default=-1) * unit >= ps[dim]:
            return None
        covered.add(dim)
        if m != list(range(len(m))) or len(m) * unit != ps[dim]:
            dims.append({"dim": dim, "unit": unit, "map": m, "split": split})
    if len(cs) != len(ps) or any(c != q for d, (c, q) in enumerate(zip(cs, ps, strict=True))
                                 if d not in covered):
        return None
    return {"op": "widen", "dims": dims}


def _ffn(key: str, rest: str, cf: Any, pf: Any, cs: tuple[int, ...], ps: tuple[int, ...],
         groups: dict[str, list[int] | None], rng: random.Random) -> Transform | None:
    if cf is None or pf is None or type(cf) is not type(pf) or cf.activation != pf.activation:
        return None
    tail = rest[len("ffn."):]
    if not isinstance(cf, MoEFFN):  # dense: w1/w3 (F, D), w2 (D, F)
        hidden = _group(groups, f"{key}.ffn", lambda: _grow(pf.hidden, cf.hidden, rng))
        out_dim = 1 if tail == "w2.weight" else 0
        return _dims(cs, ps, [(out_dim, 1, hidden, tail == "w2.weight")])
    if tail.startswith("shared."):
        hidden = _group(groups, f"{key}.shared", lambda: _grow(
            pf.shared * pf.expert_hidden, cf.shared * cf.expert_hidden, rng))
        return _dims(cs, ps, [(1 if tail == "shared.w2.weight" else 0, 1, hidden,
                               tail == "shared.w2.weight")])
    experts = _group(groups, f"{key}.experts", lambda: _grow(pf.n_experts, cf.n_experts, rng))
    if tail == "router.weight":
        return _dims(cs, ps, [(0, 1, experts, False)])
    hidden = _group(groups, f"{key}.expert_hidden",
                    lambda: _grow(pf.expert_hidden, cf.expert_hidden, rng))
    h_dim = 2 if tail == "w2" else 1
    t = _dims(cs, ps, [(0, 1, experts, False), (h_dim, 1, hidden, tail == "w2")])
    if t is not None and cf.n_experts > pf.n_experts:
        t["perturb"] = {"dim": 0, "from": pf.n_experts, "scale": EXPERT_NOISE}
    return t


def _attn(key: str, rest: str, ca: Any, pa: Any, cs: tuple[int, ...], ps: tuple[int, ...],
          groups: dict[str, list[int] | None], rng: random.Random) -> Transform | None:
    if ca.kind == "MLA" or pa.kind == "MLA" or ca.head_dim != pa.head_dim:
        return None
    tail, hd = rest[len("attn."):], ca.head_dim
    maps = _group(groups, f"{key}.heads", lambda: _head_maps(pa.heads, pa.kv_heads, ca.heads,
                                                            ca.kv_heads, rng))
    heads, kv = maps if maps is not None else (None, None)
    if tail == "wq.weight":
        return _dims(cs, ps, [(0, hd, heads, False)])
    if tail in ("wk.weight", "wv.weight"):
        return _dims(cs, ps, [(0, hd, kv, False)])
    if tail == "wo.weight":
        return _dims(cs, ps, [(1, hd, heads, True)])
    return None


def _head_maps(h: int, g: int, h2: int, g2: int, rng: random.Random
               ) -> tuple[list[int], list[int]] | None:
    """(child head -> parent head, child kv head -> parent kv head) such that every child
    head reads the kv head its parent head read (head i reads kv head i // (heads/kv_heads)),
    and every parent head has a copy; None when no such maps exist."""
    if h2 < h or g2 < g or g2 % g:
        return None
    k = g2 // g  # child kv heads per parent kv head
    per, per2 = h // g, h2 // g2  # heads per kv head
    slots = k * per2  # child heads per parent kv head (>= per since h2 >= h)
    heads = []
    for i in range(h2):
        parent_kv, s = divmod(i, slots)
        heads.append(parent_kv * per + (s if s < per else rng.randrange(per)))
    return heads, [c // k for c in range(g2)]
