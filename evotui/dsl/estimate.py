"""The analytic estimator: parameters, training FLOPs per token and KV-cache bytes.

``manifest(spec)`` lists every trainable tensor the built model registers, by its exact
``state_dict`` name and shape. The model layer builds to this manifest and a test checks
that they agree tensor by tensor, so the parameter count here is the built model's count.
Everything else (active parameters, FLOPs, cache bytes) is derived from the manifest and the
attention patterns' exact densities.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from evotui.dsl import components
from evotui.dsl.attn_cost import attn_cost, attn_shapes
from evotui.dsl.extras_cost import NEW_EXTRAS, extra_cost, extra_shapes
from evotui.dsl.extras_spec import LayerScaleExtra
from evotui.dsl.model import (
    BlockSpec,
    CustomExtra,
    DenseFFN,
    GatedExtra,
    ModelSpec,
    MoEFFN,
    RetroExtra,
)
from evotui.dsl.patterns import Pattern


@dataclass(frozen=True)
class Tensor:
    """One parameter tensor. ``active``: fraction used by a token (routed experts: k/E);
    ``per_token``: applications per token (memory projections run once per chunk)."""

    shape: tuple[int, ...]
    active: float = 1.0
    per_token: float = 1.0
    embedding: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def norm_shapes(prefix: str, dim: int, kind: str) -> dict[str, Tensor]:
    out = {f"{prefix}.weight": Tensor((dim,))}
    if kind == "layernorm":
        out[f"{prefix}.bias"] = Tensor((dim,))
    return out


def ffn_shapes(prefix: str, d: int, hidden: int, activation: str, experts: int = 0,
               active: float = 1.0) -> dict[str, Tensor]:
    lead = (experts,) if experts else ()
    suffix = "" if experts else ".weight"
    out = {f"{prefix}.w1{suffix}": Tensor((*lead, hidden, d), active)}
    if activation == "swiglu":
        out[f"{prefix}.w3{suffix}"] = Tensor((*lead, hidden, d), active)
    out[f"{prefix}.w2{suffix}"] = Tensor((*lead, d, hidden), active)
    return out


def ssm_dims(ssm: Any, d: int) -> tuple[int, int, int]:
    """(inner width, heads, conv channels) of an SSM branch."""
    inner = ssm.expand * d
    return inner, inner // ssm.head_dim, inner + 2 * ssm.d_state


def block_manifest(b: BlockSpec, p: str, d: int, norm: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    if b.attn is not None:
        a = b.attn
        out |= norm_shapes(f"{p}.attn_norm", d, norm)
        out |= {n: Tensor(shape) for n, shape in attn_shapes(a, f"{p}.attn", d).items()}
    if b.ssm is not None:
        s = b.ssm
        inner, nh, conv = ssm_dims(s, d)
        out |= norm_shapes(f"{p}.ssm_norm", d, norm)
        out[f"{p}.ssm.in_proj.weight"] = Tensor((2 * inner + 2 * s.d_state + s.dt_rank, d))
        out[f"{p}.ssm.conv.weight"] = Tensor((conv, 1, s.d_conv))
        out[f"{p}.ssm.conv.bias"] = Tensor((conv,))
        out[f"{p}.ssm.dt_proj.weight"] = Tensor((nh, s.dt_rank))
        out[f"{p}.ssm.dt_bias"] = Tensor((nh,))
        out[f"{p}.ssm.A_log"] = Tensor((nh,))
        out[f"{p}.ssm.D"] = Tensor((nh,))
        out[f"{p}.ssm.out_norm.weight"] = Tensor((inner,))
        out[f"{p}.ssm.out_proj.weight"] = Tensor((d, inner))
        if s.gate is not None:
            out[f"{p}.ssm.scale"] = Tensor((d,))
    if b.ffn is not None:
        f = b.ffn
        out |= norm_shapes(f"{p}.ffn_norm", d, norm)
        if isinstance(f, DenseFFN):
            out |= ffn_shapes(f"{p}.ffn", d, f.hidden, f.activation)
        else:
            out[f"{p}.ffn.router.weight"] = Tensor((f.n_experts, d))
            out |= ffn_shapes(f"{p}.ffn", d, f.expert_hidden, f.activation, f.n_experts,
                              f.k / f.n_experts)
            if f.shared:
                out |= ffn_shapes(f"{p}.ffn.shared", d, f.shared * f.expert_hidden, f.activation)
    present = set(b.branches())
    for j, e in enumerate(b.extras):
        q = f"{p}.extras.{j}"
        if isinstance(e, RetroExtra):
            m = e.mem_dim
            once = 1.0 / e.stride  # keys and values are projected once per chunk summary
            out |= norm_shapes(f"{q}.norm", d, norm)
            if e.aggregator != "mean":
                out[f"{q}.wq.weight"] = Tensor((m, d))
                out[f"{q}.wk.weight"] = Tensor((m, d), per_token=once)
            out[f"{q}.wv.weight"] = Tensor((m, d), per_token=once)
            if e.aggregator == "gate":
                out[f"{q}.wg.weight"] = Tensor((m, d))
            out[f"{q}.wo.weight"] = Tensor((d, m))
        elif isinstance(e, CustomExtra):
            comp = components.get(e.name)
            assert comp is not None
            out |= norm_shapes(f"{q}.norm", d, norm)
            for name, shape in comp.shapes(d, e.component_params()).items():
                out[f"{q}.{name}"] = Tensor(tuple(shape))
        elif isinstance(e, GatedExtra) and e.learnable:
            for t in e.targets:
                if t in present:
                    out[f"{q}.gate_{t}"] = Tensor((d,))
        elif isinstance(e, NEW_EXTRAS):
            if not isinstance(e, LayerScaleExtra):
                out |= norm_shapes(f"{q}.norm", d, norm)
            for name, (shape, per_token) in extra_shapes(e, q, d, b.branches()).items():
                out[name] = Tensor(shape, per_token=per_token)
    return out


def manifest(spec: ModelSpec) -> dict[str, Tensor]:
    """Every trainable tensor of the built model: ``state_dict`` name -> :class:`Tensor`."""
    d, v = spec.emb.dim, spec.emb.vocab
    out: dict[str, Tensor] = {"tok_emb.weight": Tensor((v, d), embedding=True)}
    for i, b in enumerate(spec.blocks):
        out |= block_manifest(b, f"blocks.{i}", d, spec.norm)
    for r, rec in enumerate(spec.recurrences):
        if rec.adapter == "linear":
            out[f"recurrences.{r}.adapter.weight"] = Tensor(
                (d, 2 * d if rec.concat_prelude else d)
            )
    out |= norm_shapes("final_norm", d, spec.norm)
    if not spec.head.tie_embeddings:
        out["lm_head.weight"] = Tensor((v, d))
    return out


@dataclass
class Estimate:
    params_total: int
    params_active: int
    params_embedding: int
    flops_per_token: float
    kv_bytes_per_token: int
    cache_bytes_at_seq_len: int
    seq_len: int
    layers: int
    moe_blocks: int
    ssm_blocks: int
    attn_blocks: int
    patterns: dict[str, int]
    extras: dict[str, int]
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _loops(spec: ModelSpec, i: int) -> int:
    rec = spec.recurrence_of(i)
    return rec.train_recurrence if rec is not None else 1


def estimate(spec: ModelSpec, seq_len: int, cache_dtype_bytes: int = 2) -> Estimate:
    """Analytic figures for ``spec`` trained on sequences of ``seq_len`` tokens.

    FLOPs are training FLOPs (forward + backward = 3x forward) per token: 6 per active
    weight use, the tied head's matmul, and the terms weights do not show: attention scores
    and mixing over the keys each pattern really attends to, the retro read over the chunk
    summaries available at each position, and the SSM's chunked scan. Looped blocks count once
    per training loop. KV bytes are per token across all attention layers (and loops)."""
    d, v = spec.emb.dim, spec.emb.vocab
    tensors = manifest(spec)
    total = sum(t.numel for t in tensors.values())
    active = round(sum(t.numel * t.active for t in tensors.values()))

    def weight_flops(prefix: str) -> float:
        return sum(6 * t.numel * t.active * t.per_token
                   for n, t in tensors.items() if n.startswith(prefix) and not t.embedding)

    flops = weight_flops("final_norm") + weight_flops("lm_head")
    if spec.head.tie_embeddings:
        flops += 6 * v * d
    for r, rec in enumerate(spec.recurrences):
        flops += weight_flops(f"recurrences.{r}.") * rec.train_recurrence
    kv_bytes = 0
    cache = 0
    rows = []
    for i, b in enumerate(spec.blocks):
        loops = _loops(spec, i)
        f = weight_flops(f"blocks.{i}.")
        row: dict[str, Any] = {"index": i, "branches": b.branches(), "loops": loops}
        if b.attn is not None:
            a = b.attn
            cost = attn_cost(a, seq_len, cache_dtype_bytes)
            f += cost.flops
            kv_bytes += cost.kv_bytes * loops
            cache += cost.cache * loops
            density = cost.keys / Pattern("none").keys_per_query(seq_len)
            label = "top-k" if a.key_select is not None else a.sparsity
            row |= {"kind": a.kind, "pattern": label if a.softmax else "linear",
                    "density": round(min(1.0, density), 4), "keys_per_query": round(cost.keys, 2)}
        if b.ssm is not None:
            s = b.ssm
            inner, nh, conv = ssm_dims(s, d)
            q = min(s.chunk, seq_len)
            f += 6 * nh * (q * (s.d_state + s.head_dim) / 2 + 2 * s.d_state * s.head_dim)
            cache += (nh * s.head_dim * s.d_state + conv * (s.d_conv - 1)) * cache_dtype_bytes
        for e in b.extras:
            if isinstance(e, RetroExtra):
                slots = [min(t // e.stride, e.slots) for t in range(seq_len)]
                mean_slots = sum(slots) / seq_len
                f += (12 if e.aggregator != "mean" else 6) * mean_slots * e.mem_dim
                cache += 2 * e.slots * e.mem_dim * cache_dtype_bytes
            elif isinstance(e, NEW_EXTRAS):
                extra_flops, extra_cache = extra_cost(e, seq_len, cache_dtype_bytes)
                f += extra_flops
                cache += extra_cache
        row["params"] = sum(t.numel for n, t in tensors.items() if n.startswith(f"blocks.{i}."))
        rows.append(row)
        flops += f * loops
    extras = Counter(e.type if not isinstance(e, CustomExtra) else f"custom:{e.name}"
                     for b in spec.blocks for e in b.extras)
    return Estimate(
        params_total=total,
        params_active=active,
        params_embedding=tensors["tok_emb.weight"].numel,
        flops_per_token=float(flops),
        kv_bytes_per_token=int(kv_bytes),
        cache_bytes_at_seq_len=int(cache),
        seq_len=seq_len,
        layers=len(spec.blocks),
        moe_blocks=sum(isinstance(b.ffn, MoEFFN) for b in spec.blocks),
        ssm_blocks=sum(b.ssm is not None for b in spec.blocks),
        attn_blocks=sum(b.attn is not None for b in spec.blocks),
        patterns=dict(Counter(
            "linear" if b.attn.kind == "LINEAR" else "top-k" if b.attn.key_select is not None
            else b.attn.sparsity for b in spec.blocks if b.attn is not None)),
        extras=dict(extras),
        blocks=rows,
    )
