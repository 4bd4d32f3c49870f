"""The earlier system's dialect (../shared/reference/TEL-DIALECT.md): each translated field loads
into the model that dialect meant, counted from first principles; what evotui cannot honour is
refused in one line naming the field."""

from __future__ import annotations

import pytest
import yaml

from evotui.dsl import dialect, estimate, loads
from evotui.errors import UserError
from evotui.model.lm import build_model, count_parameters

D, V = 64, 257  # width, byte vocabulary (tied head)
BASE = (D * V) + D  # embedding + final RMSNorm


def attn(heads: int, hd: int, kv: int) -> int:
    return D + heads * hd * D + 2 * kv * hd * D + D * heads * hd  # norm, wq, wk, wv, wo


def swiglu(hidden: int) -> int:
    return 3 * hidden * D


def config(model: str, extra: str = "") -> str:
    return (f"model:\n  emb: {{dim: {D}, vocab: {V}, rope: null}}\n{model}"
            "data: {tokenizer: byte, seq_len: 64, batch_size: 2, "
            "shards: [{name: 'builtin:code'}]}\n"
            + extra)


PLAIN_ATTN = "{kind: GQA, heads: 4, head_dim: 16, kv_groups: 2, rope: null}"

# name, model section, expected parameters (first principles), check on the loaded model
CASES = [
    ("moe_hidden_is_per_expert",
     "  blocks:\n  - ffn: {type: moe, hidden: 32, n_experts: 4, k: 2, shared: 1}\n",
     BASE + D + 4 * D + 4 * swiglu(32) + swiglu(32),
     lambda m: (m.blocks[0].ffn.hidden, m.blocks[0].ffn.expert_hidden) == (128, 32)),
    ("shared_expert_true_is_one_shared_expert",
     "  blocks:\n  - ffn: {type: moe, hidden: 32, n_experts: 4, k: 1, shared: 0, "
     "shared_expert: true, router_type: sigmoid}\n",
     BASE + D + 4 * D + 4 * swiglu(32) + swiglu(32),
     lambda m: (m.blocks[0].ffn.shared, m.blocks[0].ffn.router) == (1, "sigmoid")),
    ("moe_without_greedy_drops_no_tokens",
     "  blocks:\n  - ffn: {type: moe, hidden: 32, n_experts: 8, k: 2, drop_policy: none, "
     "capacity_factor: 1.2}\n",
     BASE + D + 8 * D + 8 * swiglu(32),
     lambda m: m.blocks[0].ffn.capacity_factor == 4.0),
    ("dense_ffn_dump_with_moe_keys",
     "  blocks:\n  - ffn: {type: dense, hidden: 32, activation: swiglu, dropout: 0.0, "
     "n_experts: null, k: 2, capacity_factor: 1.2, balance: 0.05, shared: 0, "
     "shared_expert: false, router_type: softmax, drop_policy: none, experts: null}\n",
     BASE + D + swiglu(32),
     lambda m: m.blocks[0].ffn.type == "dense"),
    ("gqa_without_kv_groups_has_heads_over_4_groups",
     "  blocks:\n  - attn: {kind: GQA, heads: 8, head_dim: 8, kv_groups: null, rope: null}\n",
     BASE + attn(8, 8, 4),
     lambda m: m.blocks[0].attn.kv_groups == 2),
    ("missing_kind_is_mha",
     "  blocks:\n  - attn: {heads: 4, head_dim: 16, rope: null}\n",
     BASE + attn(4, 16, 4),
     lambda m: m.blocks[0].attn.kind == "MHA"),
    ("missing_rope_is_nope",
     "  blocks:\n  - attn: {kind: MHA, heads: 4, head_dim: 16}\n",
     BASE + attn(4, 16, 4),
     lambda m: m.blocks[0].attn.rope == "none"),
    ("rope_null_is_nope",
     "  blocks:\n  - attn: {kind: MHA, heads: 4, head_dim: 16, rope: null, rope_theta: null}\n",
     BASE + attn(4, 16, 4),
     lambda m: m.blocks[0].attn.rope == "none"),
    ("yarn_without_factor_is_plain_rope",
     "  blocks:\n  - attn: {kind: MHA, heads: 4, head_dim: 16, rope: yarn, rope_factor: null}\n",
     BASE + attn(4, 16, 4),
     lambda m: (m.blocks[0].attn.rope, m.blocks[0].attn.rope_theta) == ("standard", 1e4)),
    ("ntk_with_factor_is_kept",
     "  blocks:\n  - attn: {kind: MHA, heads: 4, head_dim: 16, rope: ntk, rope_factor: 2.0}\n",
     BASE + attn(4, 16, 4),
     lambda m: (m.blocks[0].attn.rope, m.blocks[0].attn.rope_factor) == ("ntk", 2.0)),
    ("sw_without_sparsity_is_a_window_of_w_plus_the_query",
     "  blocks:\n  - attn: {kind: MHA, heads: 4, head_dim: 16, rope: null, sw: 16, "
     "sparsity: none}\n",
     BASE + attn(4, 16, 4),
     lambda m: (m.blocks[0].attn.sparsity, m.blocks[0].attn.sw) == ("sliding", 17)),
    ("local_global_window_and_alias",
     "  blocks:\n  - attn: {kind: MHA, heads: 4, head_dim: 16, rope: null, "
     "sparsity: local_global, sliding_window: 63, global_stride: 8}\n",
     BASE + attn(4, 16, 4),
     lambda m: (m.blocks[0].attn.sw, m.blocks[0].attn.global_stride) == (64, 8)),
    ("neutral_keys_are_dropped",
     "  kv_policy: null\n  macro: null\n  blocks:\n  - name: null\n    attn: {kind: GQA, "
     "heads: 4, head_dim: 16, kv_groups: 2, rope: null, causal: true, alibi: false, "
     "selector: none, selector_topk: 64, selector_heads: 1, qk_norm_max: null, stencil: null, "
     "softmax: null, projection: null, value_glu: false, gating_pos: none, gating_op: dense, "
     "kv_latent_dim: null, linear_feature_map: elu, dropout: 0.0}\n    ssm: null\n"
     "    extras: null\n",
     BASE + attn(4, 16, 2),
     lambda m: m.blocks[0].extras == []),
    ("recurrence_end_is_exclusive",
     "  blocks:\n" + f"  - attn: {PLAIN_ATTN}\n" * 3
     + "  recurrences:\n  - {start: 0, end: 2, concat_prelude: true, train_recurrence: 1, "
     "max_train_recurrence: 3, curriculum_fraction: 0.5, init_state: zeros, noise_std: 0.02, "
     "adapter_dim: 7}\n",
     BASE + 3 * attn(4, 16, 2) + D * 2 * D,
     lambda m: (m.recurrences[0].end, m.recurrences[0].train_recurrence,
                m.recurrences[0].test_recurrences) == (1, 3, [1, 2, 4, 8])),
    ("loops_that_never_ran_are_dropped",
     "  blocks:\n" + f"  - attn: {PLAIN_ATTN}\n" * 2
     + "  recurrences:\n  - {start: 5, end: 7}\n",
     BASE + 2 * attn(4, 16, 2),
     lambda m: m.recurrences == []),
    ("ssm_kind_ssm_is_mamba2",
     "  blocks:\n  - ssm: {kind: ssm, d_state: 8, d_conv: 4, dt_rank: null, chunk: null, "
     "head_dim: 32}\n",
     None,
     lambda m: (m.blocks[0].ssm.kind, m.blocks[0].ssm.dt_rank) == ("mamba2", 4)),
    ("gated_memory_target_is_retro",
     "  blocks:\n  - attn: " + PLAIN_ATTN + "\n    extras:\n    - {type: retro, "
     "memory_tokens: 32, stride: 16, aggregator: mean, gating_weight: 0.5}\n"
     "    - {type: gated, targets: [attn, memory], init_weight: 0.1, learnable: true}\n",
     BASE + attn(4, 16, 2) + D + 2 * 16 * D + 2 * D,  # retro norm, wv, wo; two gates
     lambda m: m.blocks[0].extras[1].targets == ["attn", "retro"]),
    ("alibi_is_kept",
     "  blocks:\n  - attn: {kind: MHA, heads: 4, head_dim: 16, rope: null, alibi: true}\n",
     BASE + attn(4, 16, 4),
     lambda m: m.blocks[0].attn.alibi is True),
    ("linear_attention",
     "  blocks:\n  - attn: {kind: LINEAR, heads: 4, head_dim: 16, rope: null, "
     "linear_feature_map: elu}\n",
     BASE + attn(4, 16, 4),
     lambda m: (m.blocks[0].attn.kind, m.blocks[0].attn.chunk) == ("LINEAR", 64)),
    ("linear_with_a_window_was_softmax",
     "  blocks:\n  - attn: {kind: LINEAR, heads: 4, head_dim: 16, rope: null, "
     "sparsity: sliding, sw: 8}\n",
     BASE + attn(4, 16, 4),
     lambda m: (m.blocks[0].attn.kind, m.blocks[0].attn.sw) == ("GQA", 9)),
    ("mla_latent",
     "  blocks:\n  - attn: {kind: MLA, heads: 4, head_dim: 16, rope: null, kv_latent_dim: 32, "
     "kv_groups: 2}\n",
     BASE + D + 4 * 16 * D + 32 * D + 32 + 4 * 2 * 16 * 32 + D * 4 * 16,
     lambda m: (m.blocks[0].attn.kv_latent, m.blocks[0].attn.kv_groups) == (32, 1)),
    ("output_gating_is_a_channel_gate",
     "  blocks:\n  - attn: {kind: MHA, heads: 4, head_dim: 16, rope: null, "
     "gating_pos: output, gating_op: dense}\n",
     BASE + attn(4, 16, 4) + 4 * 16 * D,
     lambda m: m.blocks[0].attn.gate == "channel"),
    ("dsa_selector_gets_an_indexer",
     "  blocks:\n  - attn: {kind: MHA, heads: 4, head_dim: 16, rope: null, selector: dsa, "
     "selector_topk: 8, selector_heads: 2, selector_dim: 8, selector_rope: partial, "
     "selector_detach: true}\n",
     BASE + attn(4, 16, 4) + 2 * 8 * D + 8 * D + 2 * D,
     lambda m: (m.blocks[0].attn.key_select.topk, m.blocks[0].attn.key_select.window) == (8, 1)),
    ("assoc_memory",
     "  blocks:\n  - attn: " + PLAIN_ATTN + "\n    extras:\n    - {type: assoc_memory, heads: 2, "
     "head_dim: 8, feature_map: elu, dropout: 0.0, gating_weight: 0.1}\n",
     BASE + attn(4, 16, 2) + D + 4 * 16 * D,
     lambda m: m.blocks[0].extras[0].gating_weight == 0.1),
    ("memory_tokens",
     "  blocks:\n  - attn: " + PLAIN_ATTN + "\n    extras:\n    - {type: memory_tokens, "
     "tokens: 4, heads: 2, head_dim: 8, dropout: 0.0, init_std: 0.02, gating_weight: 0.1}\n",
     BASE + attn(4, 16, 2) + D + 2 * 16 * D + 2 * 4 * 16,
     lambda m: m.blocks[0].extras[0].tokens == 4),
    ("chunk_memory_chunk_size",
     "  blocks:\n  - attn: " + PLAIN_ATTN + "\n    extras:\n    - {type: chunk_memory, "
     "chunk_size: 8, stride: null, heads: 2, head_dim: 8, dropout: 0.0}\n",
     BASE + attn(4, 16, 2) + D + 4 * 16 * D,
     lambda m: (m.blocks[0].extras[0].chunk, m.blocks[0].extras[0].stride) == (8, 8)),
    ("layer_scale",
     "  blocks:\n  - attn: " + PLAIN_ATTN + "\n    ffn: {type: dense, hidden: 32}\n"
     "    extras:\n    - {type: layer_scale, targets: [attn, ffn], init: 1.0e-5, "
     "learnable: true}\n",
     BASE + attn(4, 16, 2) + D + swiglu(32) + 2 * D,
     lambda m: m.blocks[0].extras[0].init == 1e-5),
    ("branch_router_token_over_present_branches",
     "  blocks:\n  - attn: " + PLAIN_ATTN + "\n    ffn: {type: dense, hidden: 32}\n"
     "    extras:\n    - {type: retro, memory_tokens: 32, stride: 16, aggregator: mean}\n"
     "    - {type: branch_router, targets: [attn, ffn, ssm, memory], router_type: token, "
     "hidden: null, dropout: 0.0, temperature: 1.0}\n",
     BASE + attn(4, 16, 2) + D + swiglu(32) + D + 2 * 16 * D + D + 3 * D,
     lambda m: m.blocks[0].extras[1].targets == ["attn", "ffn", "retro"]),
]


@pytest.mark.parametrize("name,model,params,check", CASES, ids=[c[0] for c in CASES])
def test_translated_field_loads_into_the_model_it_meant(name, model, params, check, tmp_path):
    path = tmp_path / f"{name}.yaml"  # a file in the earlier dialect
    path.write_text(config(model))
    assert dialect.detect(yaml.safe_load(path.read_text()))[0] == dialect.EARLIER
    notes: list[str] = []
    from evotui.dsl import load

    cfg = load(path, notes=notes)
    assert notes[0].startswith(dialect.DIALECT_NOTE)
    assert check(cfg.model)
    est = estimate(cfg.model, cfg.data.seq_len)
    assert count_parameters(build_model(cfg.model, 64, device="meta")) == est.params_total
    if params is not None:
        assert est.params_total == params


REFUSED = [
    ("causal_false", "attn: {kind: MHA, heads: 4, head_dim: 16, causal: false}",
     "attn.causal", "future"),
    ("qk_norm_max", "attn: {kind: MHA, heads: 4, head_dim: 16, qk_norm_max: 0.5}",
     "attn.qk_norm_max", "not QK-norm"),
    ("old_yarn_with_factor", "attn: {kind: MHA, heads: 4, head_dim: 16, rope: yarn, "
     "rope_factor: 4.0}", "attn.rope_factor", "real YaRN"),
    ("attention_output_dropout", "attn: {kind: MHA, heads: 4, head_dim: 16, dropout: 0.1}",
     "attn.dropout", "output projection"),
    ("value_gating", "attn: {kind: MHA, heads: 4, head_dim: 16, gating_pos: value}",
     "attn.gating_pos", "G2"),
    ("selector_on_local_global", "attn: {kind: MHA, heads: 4, head_dim: 16, selector: dsa, "
     "sparsity: local_global, sw: 8, global_stride: 4}", "attn.selector", "widened"),
    ("sequence_router", "attn: {kind: MHA, heads: 4, head_dim: 16}\n    ffn: {hidden: 8}\n"
     "    extras: [{type: branch_router, targets: [attn, ffn], router_type: sequence}]",
     "extras[0].router_type", "future"),
    ("feedback", "attn: {kind: MHA, heads: 4, head_dim: 16}\n    extras: [{type: feedback}]",
     "extras[0].type", "recurrence"),
    ("stencil", "attn: {kind: MHA, heads: 4, head_dim: 16, stencil: {kind: ring, block: 8}}",
     "attn.stencil", "never built"),
    ("frozen_router_bias", "ffn: {type: moe, hidden: 32, n_experts: 4, k: 2, "
     "router_bias_detached: true}", "ffn.router_bias_detached", "frozen"),
    ("expert_list", "ffn: {type: moe, hidden: 32, n_experts: 4, k: 2, experts: [{type: dense, "
     "hidden: 8}]}", "ffn.experts", "heterogeneous"),
]


@pytest.mark.parametrize("name,block,field,words", REFUSED, ids=[r[0] for r in REFUSED])
def test_what_cannot_be_honoured_is_refused_in_one_line(name, block, field, words):
    with pytest.raises(UserError) as e:
        loads(config(f"  blocks:\n  - {block}\n"), source="old.yaml")
    msg = e.value.render()
    assert len(msg.splitlines()) == 1
    assert msg.startswith("old.yaml:") and f"model.blocks[0].{field}: " in msg and words in msg


def test_gated_adapter_and_empty_span_are_refused():
    for rec, field, words in (("{start: 0, end: 1, adapter: gated}", "adapter", "linear"),
                              ("{start: 1, end: 1}", "end", "holds no block")):
        text = config(f"  blocks:\n  - attn: {PLAIN_ATTN}\n  - attn: {PLAIN_ATTN}\n"
                      f"  recurrences:\n  - {rec}\n")
        with pytest.raises(UserError) as e:
            loads(text, source="old.yaml")
        assert f"model.recurrences[0].{field}: " in e.value.render() and words in str(e.value)


def test_native_configs_are_not_touched():
    from tests.conftest import CONFIGS

    for path in CONFIGS:
        assert dialect.detect(yaml.safe_load(path.read_text()))[0] == dialect.NATIVE, path


def test_convert_writes_the_native_form_and_validate_names_the_dialect(run_cli, tmp_path):
    src = tmp_path / "old.yaml"
    src.write_text(config("  blocks:\n  - attn: {kind: GQA, heads: 8, head_dim: 8, causal: "
                          "true}\n    ffn: {type: moe, hidden: 32, n_experts: 4, k: 2}\n"))
    code, out, _ = run_cli("validate", src, "--json")
    import json

    before = json.loads(out)
    assert code == 0 and before["dialect"] == "earlier"
    dst = tmp_path / "new.yaml"
    code, out, err = run_cli("convert", src, "--out", dst)
    assert code == 0, err
    assert "read as the earlier dialect" in out and "note:" in out
    assert dialect.detect(yaml.safe_load(dst.read_text()))[0] == dialect.NATIVE
    code, out, _ = run_cli("validate", dst, "--json")
    after = json.loads(out)
    assert after["dialect"] == "evotui" and after["params_total"] == before["params_total"]
    assert after["flops_per_token"] == before["flops_per_token"]


def test_convert_writes_nothing_when_refused(run_cli, tmp_path):
    src = tmp_path / "old.yaml"
    src.write_text(config("  blocks:\n  - attn: {kind: MHA, heads: 4, head_dim: 16, "
                          "qk_norm_max: 2.0}\n"))
    dst = tmp_path / "new.yaml"
    code, _, err = run_cli("convert", src, "--out", dst)
    assert code == 2 and "qk_norm_max" in err and len(err.strip().splitlines()) == 1
    assert not dst.exists()
