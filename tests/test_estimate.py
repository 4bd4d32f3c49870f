"""The analytic estimator on small specs whose figures can be worked out by hand."""

from __future__ import annotations

import pytest

from evotui.dsl import ModelSpec, estimate, manifest


def spec(blocks, dim=64, vocab=100, tie=True, norm="rmsnorm", recurrences=()):
    return ModelSpec.model_validate({
        "emb": {"dim": dim, "vocab": vocab}, "norm": norm, "head": {"tie_embeddings": tie},
        "blocks": blocks, "recurrences": list(recurrences)})


ATTN = {"heads": 4, "head_dim": 16, "kv_groups": 2}
DENSE = {"type": "dense", "hidden": 256, "activation": "gelu"}


def test_dense_gpt_parameters_by_hand():
    s = spec([{"attn": ATTN, "ffn": DENSE}], norm="layernorm")
    est = estimate(s, 32)
    d, v = 64, 100
    attn = d * 64 + 2 * (32 * d) + 64 * d  # q, k and v for 2 KV heads, o
    mlp = 2 * d * 256
    norms = 3 * 2 * d  # attn, ffn and final LayerNorms: weight and bias
    assert est.params_total == v * d + attn + mlp + norms
    assert est.params_active == est.params_total


def test_untied_head_adds_vocab_by_dim():
    a = estimate(spec([{"ffn": DENSE}], tie=True), 16).params_total
    b = estimate(spec([{"ffn": DENSE}], tie=False), 16).params_total
    assert b - a == 100 * 64


def test_moe_active_counts_top_k_and_shared():
    moe = {"type": "moe", "hidden": 256, "n_experts": 8, "k": 2, "shared": 1,
           "activation": "swiglu"}
    est = estimate(spec([{"ffn": moe}]), 16)
    per_expert = 3 * 64 * 32  # swiglu, 256 / 8 = 32 wide
    routed, shared = 8 * per_expert, per_expert
    rest = 100 * 64 + 2 * 64 + 8 * 64  # embedding, two RMSNorms, router
    assert est.params_total == rest + routed + shared
    assert est.params_active == rest + 2 * per_expert + shared


def test_gqa_kv_bytes_and_mqa():
    gqa = estimate(spec([{"attn": ATTN}]), 16)
    assert gqa.kv_bytes_per_token == 2 * 2 * 16 * 2  # K and V, 2 KV heads of 16, bf16
    mqa = estimate(spec([{"attn": {**ATTN, "kind": "MQA", "kv_groups": None}}]), 16)
    assert mqa.kv_bytes_per_token == 2 * 1 * 16 * 2


def test_sparsity_scales_only_the_attention_term():
    n = 1024
    dense = estimate(spec([{"attn": ATTN}]), n)
    slide = estimate(spec([{"attn": {**ATTN, "sparsity": "sliding", "sw": 64}}]), n)
    assert dense.params_total == slide.params_total
    attn_dense = 12 * 4 * 16 * (n + 1) / 2
    keys = (sum(range(1, 64)) + (n - 63) * 64) / n
    assert dense.flops_per_token - slide.flops_per_token == pytest.approx(
        attn_dense - 12 * 4 * 16 * keys)
    assert slide.cache_bytes_at_seq_len < dense.cache_bytes_at_seq_len


def test_six_n_for_weights_plus_tied_head():
    s = spec([{"ffn": DENSE}])
    est = estimate(s, 8)
    non_emb = est.params_total - 100 * 64
    assert est.flops_per_token == pytest.approx(6 * non_emb + 6 * 100 * 64)


def test_recurrence_multiplies_flops_not_params():
    blocks = [{"ffn": DENSE}, {"ffn": DENSE}]
    plain = estimate(spec(blocks), 8)
    looped = estimate(spec(blocks, recurrences=[{"start": 1, "end": 1, "train_recurrence": 3}]),
                      8)
    assert looped.params_total == plain.params_total
    block = 6 * (2 * 64 * 256 + 64)
    assert looped.flops_per_token - plain.flops_per_token == pytest.approx(2 * block)


def test_manifest_names_are_state_dict_names():
    m = manifest(spec([{"attn": ATTN, "ssm": {"d_state": 8, "head_dim": 32, "gate": 0.1},
                        "ffn": DENSE, "extras": [
                            {"type": "retro", "memory_tokens": 32, "stride": 8},
                            {"type": "gated", "targets": ["attn", "ssm"]},
                            {"type": "custom", "name": "exp-bridge", "params": {"dim": 8}}]}],
                      tie=False))
    assert m["blocks.0.attn.wk.weight"].shape == (32, 64)
    assert m["blocks.0.ssm.in_proj.weight"].shape == (2 * 128 + 2 * 8 + 4, 64)
    assert m["blocks.0.extras.0.wg.weight"].shape == (16, 64)
    assert {"blocks.0.extras.1.gate_attn", "blocks.0.extras.1.gate_ssm"} <= set(m)
    assert m["blocks.0.extras.2.w_in.weight"].shape == (8, 128)
    assert "lm_head.weight" in m and "final_norm.weight" in m


def _attn_flops(attn, seq_len):
    """FLOPs per token of one attention block beyond its weights."""
    s = spec([{"attn": attn}])
    est = estimate(s, seq_len)
    weights = sum(6 * t.numel * t.per_token for n, t in manifest(s).items()
                  if n.startswith("blocks.0."))
    return est.flops_per_token - weights - 6 * 100 * 64 - 6 * 64  # tied head, final norm


def test_linear_attention_costs_the_same_per_token_at_any_length():
    linear = {"kind": "LINEAR", "heads": 2, "head_dim": 16, "chunk": 8}
    assert _attn_flops(linear, 64) == _attn_flops(linear, 4096) == 12 * 2 * 16 * (8 + 16)
    softmax = {"kind": "GQA", "heads": 2, "head_dim": 16}
    assert _attn_flops(softmax, 4096) == pytest.approx(64 * _attn_flops(softmax, 64), rel=0.02)


def test_mla_scores_over_the_rotary_part_and_caches_the_latent():
    mla = {"kind": "MLA", "heads": 2, "head_dim": 16, "kv_latent": 24, "rope_dim": 8}
    keys = (8 + 1) / 2  # dense causal at seq_len 8
    assert _attn_flops(mla, 8) == pytest.approx(6 * 2 * (2 * 16 + 8) * keys)
    est = estimate(spec([{"attn": mla}, {"attn": mla}]), 8)
    assert est.kv_bytes_per_token == 2 * 2 * (24 + 8)


def test_memory_extras_cost_what_they_read():
    tokens = {"type": "memory_tokens", "tokens": 4, "heads": 2, "head_dim": 8}
    chunk = {"type": "chunk_memory", "chunk": 4, "stride": 4, "heads": 2, "head_dim": 8}
    base = estimate(spec([{"ffn": DENSE}]), 16).flops_per_token
    with_tokens = estimate(spec([{"ffn": DENSE, "extras": [tokens]}]), 16)
    extra_weights = 6 * (64 + 2 * 16 * 64)  # its norm, wq, wo
    assert with_tokens.flops_per_token - base == pytest.approx(extra_weights + 12 * 4 * 16)
    with_chunk = estimate(spec([{"ffn": DENSE, "extras": [chunk]}]), 16)
    visible = sum((t + 1) // 4 for t in range(16)) / 16
    kv_once = 6 * 2 * 16 * 64 / 4  # wk, wv once per summary
    assert with_chunk.flops_per_token - base == pytest.approx(
        extra_weights + kv_once + 12 * 16 * visible)
