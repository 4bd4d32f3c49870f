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
