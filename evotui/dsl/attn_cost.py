"""The attention branch's tensors, FLOPs and cache, per kind (see ``evotui.dsl.estimate``).

Every tensor the built module registers is listed with its exact ``state_dict`` name (relative
to the block) and shape; MHA / GQA / MQA and LINEAR share their projection names, so switching
between them keeps the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from evotui.dsl.attn_spec import AttnSpec
from evotui.dsl.patterns import Pattern


@dataclass(frozen=True)
class AttnCost:
    flops: float  # training FLOPs per token beyond the weights (scores, mixing, state)
    kv_bytes: int  # cache bytes each token adds
    cache: int  # cache bytes of one sequence of seq_len tokens
    keys: float  # keys a query attends on average (LINEAR: the chunk it mixes directly)


def attn_shapes(a: AttnSpec, p: str, d: int) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the attention module at prefix ``p`` (e.g. ``blocks.0.attn``)."""
    h, hd = a.heads, a.head_dim
    out: dict[str, tuple[int, ...]] = {}
    if a.kind == "MLA":
        rd = a.rope_dim or 0
        if a.q_latent is not None:
            out[f"{p}.wq_a.weight"] = (a.q_latent, d)
            out[f"{p}.q_norm.weight"] = (a.q_latent,)
            out[f"{p}.wq_b.weight"] = (h * (hd + rd), a.q_latent)
        else:
            out[f"{p}.wq.weight"] = (h * (hd + rd), d)
        out[f"{p}.wkv_a.weight"] = (a.kv_latent + rd, d)
        out[f"{p}.kv_norm.weight"] = (a.kv_latent,)
        out[f"{p}.wkv_b.weight"] = (h * 2 * hd, a.kv_latent)
    else:
        out[f"{p}.wq.weight"] = (h * hd, d)
        out[f"{p}.wk.weight"] = (a.kv_heads * hd, d)
        out[f"{p}.wv.weight"] = (a.kv_heads * hd, d)
        if a.qk_norm:
            out[f"{p}.q_norm.weight"] = (hd,)
            out[f"{p}.k_norm.weight"] = (hd,)
    if a.gate_width:
        out[f"{p}.gate.wg.weight"] = (a.gate_width, d)
    if a.key_select is not None:
        s = a.key_select
        out[f"{p}.select.wq.weight"] = (s.heads * s.dim, d)
        out[f"{p}.select.wk.weight"] = (s.dim, d)
        out[f"{p}.select.ww.weight"] = (s.heads, d)
    out[f"{p}.wo.weight"] = (d, h * hd)
    return out


def selected_keys(a: AttnSpec, seq_len: int) -> float:
    """Mean keys per query under the key selector: its window and top-k, at most t + 1."""
    s = a.key_select
    assert s is not None
    return sum(min(t + 1, s.window + s.topk) for t in range(seq_len)) / seq_len


def attn_cost(a: AttnSpec, seq_len: int, dtype_bytes: int = 2) -> AttnCost:
    h, hd = a.heads, a.head_dim
    if a.kind == "LINEAR":
        c = min(a.chunk or 64, seq_len)
        # per head and token: scores and mixing inside the chunk, reading and updating the
        # (hd x hd) state, x3 for forward + backward
        state = a.kv_heads * hd * (hd + 1) * dtype_bytes
        return AttnCost(12 * h * hd * (c + hd), 0, state, float(c))
    pat = a.pattern()
    if a.key_select is not None:
        keys = selected_keys(a, seq_len)
        causal = Pattern("none").keys_per_query(seq_len)
        s = a.key_select
        flops = 12 * h * hd * keys + 6 * s.heads * s.dim * causal
        per_token = (2 * a.kv_heads * hd + s.dim) * dtype_bytes
        return AttnCost(flops, per_token, per_token * seq_len, keys)
    keys = pat.keys_per_query(seq_len)
    if a.kind == "MLA":
        rd = a.rope_dim or 0
        per_token = (a.kv_latent + rd) * dtype_bytes
        flops = 6 * h * (2 * hd + rd) * keys
    else:
        per_token = 2 * a.kv_heads * hd * dtype_bytes
        flops = 12 * h * hd * keys
    return AttnCost(flops, per_token, per_token * pat.retained_keys(seq_len), keys)
