"""The model section of the earlier dialect, field by field (see :mod:`evotui.dsl.dialect`).

Each ``_attn``/``_ffn``/... function takes one raw mapping and returns evotui's native mapping
for the model the earlier system meant, noting each translation and refusing, with the field
and the reason, what evotui cannot honour.
"""

from __future__ import annotations

from typing import Any

from evotui.dsl.dialect import _blocks, _dict, _drop_nulls, _neutral, _Reader, _recurrences

EARLIER_ROPE_THETA = 10000.0
SCALED = ("linear", "ntk", "yarn")
WINDOWED = ("sliding", "local_global", "local_block")
MOE_ONLY = ("n_experts", "k", "capacity_factor", "balance", "shared", "shared_expert",
            "router_type", "router_temperature", "router_bias_detached", "drop_policy",
            "router_lb_weight", "router_aux_weight", "experts")
NEVER_BUILT = "the earlier system parsed it but never built it, and evotui has no equivalent"


def translate_model(model: dict[str, Any], r: _Reader, seq_len: int | None,
                    lb_global: bool) -> dict[str, Any]:
    out = dict(model)
    emb = _dict(out.get("emb"))
    if "rope" in emb:
        emb = {k: v for k, v in emb.items() if k != "rope"}
        if not _neutral(model["emb"]["rope"]):
            r.note(("emb", "rope"), "dropped: the earlier system never read it (set RoPE per "
                   "block)")
        out["emb"] = emb
    if "kv_policy" in out:
        if not _neutral(out["kv_policy"]):
            r.note(("kv_policy",), "dropped: it changed only the earlier system's KV-bytes "
                   "figure, never the model; evotui counts the cache from the model itself")
        del out["kv_policy"]
    if "macro" in out:
        if not _neutral(out["macro"]):
            raise r.refuse(("macro",), f"not supported: {NEVER_BUILT} (its commit is titled "
                           "'macro primitives (unwired)'); remove it")
        del out["macro"]
    blocks = model.get("blocks")
    if isinstance(blocks, list):
        out["blocks"] = [_block(b, i, r, seq_len, lb_global) if isinstance(b, dict) else b
                         for i, b in enumerate(blocks)]
    if "recurrences" in out:
        out["recurrences"] = _recurrences(out.get("recurrences"), len(_blocks(model)), r)
        if not out["recurrences"]:
            del out["recurrences"]
    return out


def _block(b: dict[str, Any], i: int, r: _Reader, seq_len: int | None,
           lb_global: bool) -> dict[str, Any]:
    out = _drop_nulls(b)
    loc = ("blocks", i)
    if isinstance(out.get("attn"), dict):
        out["attn"] = _attn(out["attn"], (*loc, "attn"), r, seq_len)
    if isinstance(out.get("ffn"), dict):
        out["ffn"] = _ffn(out["ffn"], (*loc, "ffn"), r, lb_global)
    if isinstance(out.get("ssm"), dict):
        out["ssm"] = _ssm(out["ssm"], (*loc, "ssm"), r)
    if isinstance(out.get("extras"), list):
        present = _block_branches(out)
        extras = [_extra(e, (*loc, "extras", j), r, present) if isinstance(e, dict) else e
                  for j, e in enumerate(out["extras"])]
        out["extras"] = [e for e in extras if e is not None]
        if not out["extras"]:
            del out["extras"]
    return out


def _pop_neutral(a: dict[str, Any], key: str, loc: tuple[Any, ...], r: _Reader,
                 why: str) -> None:
    """Drop ``key`` at a neutral value; refuse any other value with ``why``."""
    if key in a:
        if not _neutral(a[key]):
            raise r.refuse((*loc, key), why)
        del a[key]


def _attn(raw: dict[str, Any], loc: tuple[Any, ...], r: _Reader,
          seq_len: int | None) -> dict[str, Any]:
    a = dict(raw)
    if a.get("causal", True) is not True:
        raise r.refuse((*loc, "causal"), "false made the earlier attention bidirectional, "
                       "which lets a language model read the future; evotui's attention is "
                       "causal: remove it")
    a.pop("causal", None)
    if "kind" not in a:
        a["kind"] = "MHA"
        r.note((*loc, "kind"), "missing: the earlier default MHA")
    kind = a["kind"] = str(a["kind"]).upper()
    heads = a.get("heads")
    if kind == "LINEAR":
        kind = _linear(a, loc, r)
    if kind == "MLA":
        _mla(a, loc, r)
    if a.get("kv_groups") is None and kind == "GQA" and isinstance(heads, int):
        groups = max(1, heads // 4)
        if heads % groups:
            raise r.refuse((*loc, "kv_groups"), f"missing: the earlier GQA took heads//4 = "
                           f"{groups} query heads per KV head, which does not divide heads "
                           f"({heads}); set kv_groups")
        a["kv_groups"] = groups
        r.note((*loc, "kv_groups"), f"missing: the earlier GQA default heads//4 = {groups} "
               f"query heads per KV head ({heads // groups} KV heads)")
    elif a.get("kv_groups") is None:
        a.pop("kv_groups", None)
    _rope(a, loc, r)
    _pattern(a, loc, r, seq_len)
    _pop_neutral(a, "dropout", loc, r, "the earlier attention dropout acted on the output "
                 "projection, evotui's on the attention probabilities; set 0")
    if a.get("alibi") is not True:
        a.pop("alibi", None)
    if _neutral(a.get("linear_feature_map")) or a.get("linear_feature_map") == "elu":
        a.pop("linear_feature_map", None)
    _pop_neutral(a, "kv_latent_dim", loc, r, "applies to kind MLA only; remove it")
    _pop_neutral(a, "qk_norm_max", loc, r, "rescaled the whole attention input (q, k and v) "
                 "to a norm bound, which is not QK-norm and evotui does not build; remove it")
    gating = a.pop("gating_pos", None)
    a.pop("gating_op", None)  # dense or diagonal: evotui's gate is its own projection
    if a.get("gated") is True:
        gating = "output"
    a.pop("gated", None)
    if gating == "output":
        a["gate"] = "channel"
        r.note((*loc, "gating_pos"), "output -> gate: channel; the earlier gate was computed "
               "from the rotated query, evotui's from the block input (Qwen's G1)")
    elif not _neutral(gating):
        raise r.refuse((*loc, "gating_pos"), f"{gating}: gating the values (G2) is not built "
                       "by evotui; use output")
    _selector(a, loc, r)
    for key in ("stencil", "softmax", "projection", "value_glu"):
        _pop_neutral(a, key, loc, r, f"not supported: {NEVER_BUILT}; remove it")
    return a


def _linear(a: dict[str, Any], loc: tuple[Any, ...], r: _Reader) -> str:
    """The earlier LINEAR fell back to softmax attention when any of these was set."""
    softmax = [k for k in ("selector", "sparsity", "sw", "sliding_window", "alibi")
               if not _neutral(a.get(k))]
    if softmax:
        a["kind"] = "GQA"
        r.note((*loc, "kind"), f"LINEAR with {softmax[0]} set was softmax attention in the "
               "earlier system: read as GQA")
        return "GQA"
    return "LINEAR"


def _mla(a: dict[str, Any], loc: tuple[Any, ...], r: _Reader) -> None:
    latent = a.pop("kv_latent_dim", None)
    if latent is None:
        raise r.refuse((*loc, "kv_latent_dim"), "kind MLA needs it (the earlier static check "
                       "did too)")
    a["kv_latent"] = latent
    if a.pop("kv_groups", None) not in (None, 1):
        r.note((*loc, "kv_groups"), "dropped: evotui's MLA up-projects keys and values for "
               "every head from the latent (the cache is the latent)")
    r.note((*loc, "kind"), "MLA: the earlier one rotated the up-projected keys; evotui's "
           "carries position in a decoupled rope_dim part and caches the latent, as published")


def _selector(a: dict[str, Any], loc: tuple[Any, ...], r: _Reader) -> None:
    selector = a.pop("selector", None)
    knobs = {k: a.pop(k) for k in [k for k in a if k.startswith("selector_")]}
    if _neutral(selector):
        return
    if selector != "dsa":
        raise r.refuse((*loc, "selector"), f"{selector!r} is unknown; the earlier dialect had "
                       "none and dsa")
    sparsity = a.get("sparsity", "none")
    if sparsity not in ("none", "sliding"):
        raise r.refuse((*loc, "selector"), f"the earlier selector widened the {sparsity} mask; "
                       "evotui's keeps a local window and its top-k only (use sparsity none or "
                       "sliding)")
    window = a.pop("sw", 1) if sparsity == "sliding" else 1
    a.pop("sparsity", None)
    sel: dict[str, Any] = {"topk": knobs.get("selector_topk") or 64, "window": window,
                           "heads": knobs.get("selector_heads") or 1}
    hd = a.get("head_dim", 64)
    sel["dim"] = knobs.get("selector_dim") or min(hd, 32)
    a["key_select"] = sel
    r.note((*loc, "selector"), "dsa -> key_select: the earlier selector scored keys with the "
           "attention's own q and k and had no trained indexer; evotui's indexer has its own "
           "weights, distilled from the attention scores")


def _rope(a: dict[str, Any], loc: tuple[Any, ...], r: _Reader) -> None:
    if "rope" not in a:
        a["rope"] = "none"
        r.note((*loc, "rope"), "missing: the earlier default was no RoPE (rope: none)")
    elif _neutral(a["rope"]):
        a["rope"] = "none"
    for key in ("rope_theta", "rope_factor"):
        if a.get(key) is None:
            a.pop(key, None)
    if a["rope"] == "none":
        a.pop("rope_theta", None)
        a.pop("rope_factor", None)
        return
    r.note((), "RoPE: the earlier rotation used only every other frequency (each twice); "
           "evotui builds standard RoPE over all of them")
    if a["rope"] in SCALED and a.get("rope_factor", 1.0) == 1.0:
        r.note((*loc, "rope"), f"{a['rope']} without a rope_factor was plain RoPE in the "
               "earlier system (factor 1): read as standard")
        a["rope"] = "standard"
        a.pop("rope_factor", None)
    elif a["rope"] == "yarn":
        raise r.refuse((*loc, "rope_factor"), "the earlier 'yarn' divided positions and scaled "
                       "the base at once, without YaRN's ramp or temperature; evotui builds "
                       "real YaRN: write rope: yarn in a native config if that is what you want")
    if "rope_theta" not in a:
        a["rope_theta"] = EARLIER_ROPE_THETA


def _pattern(a: dict[str, Any], loc: tuple[Any, ...], r: _Reader, seq_len: int | None) -> None:
    if "sliding_window" in a:
        sw = a.pop("sliding_window")
        if a.get("sw") is None:
            a["sw"] = sw
    for key in ("sw", "block_size", "block_stride", "global_stride", "dilation", "sparsity"):
        if a.get(key) is None:
            a.pop(key, None)
    sparsity = a.get("sparsity", "none")
    if sparsity == "none" and "sw" in a:
        a["sparsity"] = sparsity = "sliding"
        r.note((*loc, "sparsity"), "none with sw: the earlier system built a sliding window")
    if sparsity in WINDOWED or (sparsity == "dilated" and "sw" in a):
        w = a.get("sw")
        if w is None:
            w = a.get("head_dim", 64)
            r.note((*loc, "sw"), f"missing: the earlier window defaulted to head_dim ({w})")
        sw = w + 1 if seq_len is None else min(w + 1, seq_len)
        a["sw"] = sw
        r.note((*loc, "sw"), f"{w} -> {sw}: the earlier window i-{w}..i holds {w} keys besides "
               "the query; evotui's sw counts the query too")


def _ffn(raw: dict[str, Any], loc: tuple[Any, ...], r: _Reader, lb_global: bool
         ) -> dict[str, Any]:
    f = _drop_nulls(raw)
    if f.get("type", "dense") != "moe":
        # a full dump carries the MoE keys on dense layers too; a dense layer never read them
        return {k: v for k, v in f.items() if k not in MOE_ONLY}
    _pop_neutral(f, "experts", loc, r, "heterogeneous expert lists are not built by evotui; "
                 "remove it (experts are SwiGLU FFNs)")
    _pop_neutral(f, "router_bias_detached", loc, r, "the earlier bias stayed frozen at its "
                 "random init (a stub of aux-loss-free balancing); remove it")
    for key in ("router_lb_weight", "router_aux_weight"):
        _pop_neutral(f, key, loc, r, "set balance (this layer's load-balance weight) instead")
    _pop_neutral(f, "dropout", loc, r, "evotui's MoE has no dropout; set 0")
    n, k, hidden = f.get("n_experts"), f.get("k", 2), f.get("hidden")
    f["k"] = k
    if isinstance(n, int) and isinstance(hidden, int):
        f["hidden"] = hidden * n
        r.note((*loc, "hidden"), f"{hidden} per expert in the earlier dialect -> {hidden * n} "
               f"(evotui's hidden is the routed width of all {n} experts)")
    shared = f.pop("shared_expert", False) is True or (f.get("shared") or 0) >= 1
    if shared and f.get("shared", 1) != 1:
        r.note((*loc, "shared"), f"{f['shared']} -> 1: the earlier system built one shared "
               "expert for any count")
    f["shared"] = 1 if shared else 0
    if "router_type" in f:
        f["router"] = f.pop("router_type")
    if f.pop("drop_policy", "none") != "greedy" and isinstance(n, int) and isinstance(k, int):
        f["capacity_factor"] = n / k
        r.note((*loc, "capacity_factor"), f"-> {n / k:g} (n_experts / k): without drop_policy "
               "greedy the earlier MoE dropped no tokens")
    if lb_global and "balance" in f:
        del f["balance"]
        r.note((*loc, "balance"), "dropped: the earlier system ignored it while "
               "train.router_lb_coeff was set, which evotui uses as this layer's weight")
    if f.get("activation", "swiglu") != "swiglu":
        r.note((*loc, "activation"), "-> swiglu: the earlier experts were SwiGLU whatever it said")
    f.pop("activation", None)
    return f


def _ssm(raw: dict[str, Any], loc: tuple[Any, ...], r: _Reader) -> dict[str, Any]:
    s = _drop_nulls(raw)
    if s.get("kind") == "ssm":
        s["kind"] = "mamba2"
    r.note((), "ssm: the earlier ssm was a short causal convolution (no state, no scan); "
           "evotui builds the Mamba2 selective SSM it names")
    return s


MEMORY_KINDS = ("retro", "assoc_memory", "memory_tokens", "chunk_memory")


def _block_branches(b: dict[str, Any]) -> list[str]:
    out = [k for k in ("attn", "ssm", "ffn") if isinstance(b.get(k), dict)]
    extras = b.get("extras")
    for e in extras if isinstance(extras, list) else []:
        if isinstance(e, dict) and e.get("type") not in ("gated", "layer_scale", "branch_router"):
            out.append(e.get("type"))
    return out


def _targets(e: dict[str, Any], present: list[str]) -> list[str]:
    """The earlier target ``memory`` stands for every memory extra of the block."""
    out: list[str] = []
    for t in e.get("targets") or []:
        out += [m for m in present if m in MEMORY_KINDS] if t == "memory" else [t]
    return list(dict.fromkeys(out))


def _extra(raw: dict[str, Any], loc: tuple[Any, ...], r: _Reader,
           present: list[str]) -> dict[str, Any] | None:
    e = _drop_nulls(raw)
    kind = e.get("type")
    if kind == "feedback":
        raise r.refuse((*loc, "type"), "the earlier 'feedback' extra was an ungated MLP "
                       "(feedback_gate) with no feedback; use gated or a recurrence")
    if kind in ("assoc_memory", "memory_tokens", "chunk_memory", "branch_router"):
        _pop_neutral(e, "dropout", loc, r, "evotui's memory extras have no dropout; set 0")
    if kind == "assoc_memory" and e.get("feature_map", "elu") == "elu":
        e.pop("feature_map", None)
    if kind == "memory_tokens" and "init_std" in e:
        del e["init_std"]
        r.note((*loc, "init_std"), "dropped: evotui initialises the slots at emb.init_std")
    if kind == "chunk_memory" and "chunk_size" in e:
        e["chunk"] = e.pop("chunk_size")
    if kind == "retro":
        r.note((), "retro: the earlier retro was a parameter-free moving average; evotui builds "
               "a causal memory over earlier chunk summaries")
    if kind in ("gated", "layer_scale", "branch_router") and isinstance(e.get("targets"), list):
        e["targets"] = _targets(e, present)
    if kind == "gated":
        r.note((), "gated: the earlier gates were one scalar per branch; evotui's are per channel")
    if kind == "branch_router":
        if e.pop("router_type", "token") == "sequence":
            raise r.refuse((*loc, "router_type"), "sequence pooled the whole sequence, so every "
                           "token read the future; use token (a per-token mixture)")
        absent = [t for t in e.get("targets", []) if t not in present]
        kept = [t for t in e.get("targets", []) if t in present]
        if absent:
            r.note((*loc, "targets"), f"{', '.join(absent)} dropped: the block lacks them (the "
                   "earlier router still gave them weight)")
        if len(kept) < 2:
            r.note(loc, "dropped: a router over fewer than two branches is a constant")
            return None
        e["targets"] = kept
        r.note((*loc,), "the routed branches read the block input in parallel, each through "
               "its own pre-norm")
    return e
