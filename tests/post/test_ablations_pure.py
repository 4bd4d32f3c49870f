"""Ablation transforms: each variant validates, builds, keeps its block ids, inherits what still
matches, and really lacks the motif; a motif a genome lacks is reported, not dropped."""

from __future__ import annotations

import pytest

from evotui.dsl import ModelSpec, estimate, load, loads, manifest, to_data
from evotui.evolve.ablations import (
    MOTIFS,
    AblationError,
    Context,
    Variant,
    ablations,
    get,
    motif_names,
)
from evotui.evolve.inheritance import inheritance_map
from evotui.model.ffn import MoE
from evotui.model.lm import Gates, build_model
from evotui.model.memory import Retro
from evotui.model.ssm import Mamba2
from tests.conftest import ROOT

TINY_MOTIFS = ["retro", "local_global->sliding", "kv_groups->1", "norm", "ssm", "moe->dense",
               "extra:custom:exp-gater", "extra:gated", "extra:custom:exp-bridge"]


@pytest.fixture(scope="module")
def tiny():
    return load(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def variants(tiny):
    return ablations(tiny.model, ctx=Context.from_config(tiny))


def _modules(spec: ModelSpec, seq_len: int) -> list:
    return list(build_model(spec, seq_len, device="meta").modules())


def _lacks(name: str, spec: ModelSpec, seq_len: int) -> bool:
    """The built model has none of the motif's modules / settings."""
    mods = _modules(spec, seq_len)
    attns = [m for m in mods if type(m).__name__ == "Attention"]
    if name == "retro":
        return not any(isinstance(m, Retro) for m in mods)
    if name == "local_global->sliding":
        return all(a.pattern.kind != "local_global" for a in attns)
    if name == "kv_groups->1":
        return all(a.kv_heads == a.heads for a in attns)
    if name == "ssm":
        return not any(isinstance(m, Mamba2) for m in mods)
    if name == "moe->dense":
        return not any(isinstance(m, MoE) for m in mods)
    if name == "norm":
        return not any(type(m).__name__ == "RMSNorm" for m in mods)
    if name == "extra:gated":
        return not any(isinstance(m, Gates) for m in mods)
    if name.startswith("extra:custom:"):
        cls = {"exp-gater": "ExpGater", "exp-bridge": "ExpBridge"}[name.split(":")[2]]
        return not any(type(m).__name__ == cls for m in mods)
    raise AssertionError(name)


def test_tiny_has_every_motif_but_the_default_theta(tiny, variants):
    assert motif_names([tiny.model]) == [*MOTIFS, "extra:custom:exp-gater", "extra:gated",
                                         "extra:custom:exp-bridge"]
    # tiny has none of issue 17's attention kinds and options (tests/evolve covers them)
    absent = {"rope_theta->default", "alibi", "qk_norm", "attn_gate", "key_select->dense",
              "linear->softmax", "mla->mha"}
    assert set(variants) == set(TINY_MOTIFS) | absent
    assert all(isinstance(variants[m], str) for m in absent)
    assert variants["rope_theta->default"] == \
        "every RoPE attention uses the default theta 10000"


@pytest.mark.parametrize("name", TINY_MOTIFS)
def test_variant_validates_builds_and_lacks_the_motif(tiny, variants, name):
    v = variants[name]
    assert isinstance(v, Variant) and v.motif == name and v.change
    n = tiny.data.seq_len
    assert not _lacks(name, tiny.model, n)  # the candidate has it ...
    assert _lacks(name, v.spec, n)  # ... the variant does not
    # valid inside the run config, and a round trip through YAML gives the same genome
    data = to_data(tiny)
    data["model"] = to_data(v.spec)
    import yaml

    assert to_data(loads(yaml.safe_dump(data)).model) == to_data(v.spec)
    # block ids are the candidate's (stable), in the candidate's order
    parent_ids = [b.id for b in tiny.model.blocks]
    ids = [b.id for b in v.spec.blocks]
    assert ids == [i for i in parent_ids if i in ids]
    # every variant tensor whose name and shape the candidate's block of the same id has is
    # inherited; with nothing but a removal every tensor is inherited
    mapping = inheritance_map(v.spec, [(0, i) for i in ids], [tiny.model])
    own, parent = manifest(v.spec), manifest(tiny.model)
    matched = {k for k, (_, src) in mapping.items() if parent[src].shape == own[k].shape}
    if name in ("retro", "extra:gated", "extra:custom:exp-gater", "extra:custom:exp-bridge",
                "local_global->sliding"):
        assert matched == set(own)
    else:
        assert len(matched) > len(own) // 2


def test_local_global_keeps_its_window(tiny, variants):
    before = {b.id: b.attn for b in tiny.model.blocks}
    for b in variants["local_global->sliding"].spec.blocks:
        if before[b.id] is not None and before[b.id].sparsity == "local_global":
            assert b.attn.sparsity == "sliding" and b.attn.sw == before[b.id].sw
            assert b.attn.global_stride is None
        else:
            assert b.attn == before[b.id]


def test_moe_to_dense_keeps_the_active_width(tiny, variants):
    v = variants["moe->dense"].spec
    for old, new in zip(tiny.model.blocks, v.blocks, strict=True):
        if old.ffn.type == "moe":
            f = old.ffn
            assert new.ffn.type == "dense"
            assert new.ffn.hidden == f.expert_hidden * (f.k + f.shared)
            assert new.ffn.activation == f.activation
        else:
            assert new.ffn == old.ffn
    a, b = estimate(tiny.model, 128), estimate(v, 128)
    assert b.params_total < a.params_total  # the unused experts go
    routers = sum(tiny.model.emb.dim * blk.ffn.n_experts for blk in tiny.model.blocks
                  if blk.ffn.type == "moe")
    assert a.params_active - b.params_active == routers  # only the routers differ


def test_ssm_block_removed_and_spans_remapped(tiny, variants):
    old = tiny.model
    assert [b.id for b in old.blocks[2:4]] == ["b2", "b3"] and old.blocks[2].attn is None
    v = variants["ssm"].spec
    assert "b2" not in [b.id for b in v.blocks]
    rec = v.recurrences[0]
    assert [b.id for b in v.blocks[rec.start:rec.end + 1]] == ["b3"]  # the span lost b2


def test_ssm_in_a_hybrid_block_goes_alone():
    cfg = loads(_yaml("""
    - {attn: {kind: MHA, heads: 2, head_dim: 16}, ssm: {head_dim: 16, chunk: 16},
       extras: [{type: gated, targets: [ssm]}]}
    - {attn: {kind: MHA, heads: 2, head_dim: 16}, ssm: {head_dim: 16, chunk: 16},
       ffn: {hidden: 64}, extras: [{type: gated, targets: [ssm, ffn]}]}
    """))
    v = get("ssm").ablate(cfg.model, Context.from_config(cfg))
    assert [b.id for b in v.spec.blocks] == ["b0", "b1"]
    assert all(b.ssm is None and b.attn is not None for b in v.spec.blocks)
    assert v.spec.blocks[0].extras == []  # its gate had no target left
    assert v.spec.blocks[1].gated().targets == ["ffn"]
    assert "hybrid" in v.change


def test_rope_theta_back_to_the_default():
    cfg = loads(_yaml("""
    - {attn: {kind: MHA, heads: 2, head_dim: 16, rope_theta: 50000.0}}
    - {attn: {kind: MHA, heads: 2, head_dim: 16, rope: none}}
    """))
    v = get("rope_theta->default").apply(cfg.model)  # no run config: the DSL's default
    assert v.blocks[0].attn.rope_theta == 10000.0 and v.blocks[1].attn.rope == "none"
    run = Context(rope_theta_default=50000.0, cfg=cfg)  # the run's default: nothing to do
    assert get("rope_theta->default").reason(cfg.model, run) == \
        "every RoPE attention uses the default theta 50000"


def test_retro_only_blocks_go_and_a_motif_that_would_empty_the_model_is_na():
    cfg = loads(_yaml("""
    - {attn: {kind: MHA, heads: 2, head_dim: 16}}
    - {extras: [{type: retro, memory_tokens: 32, stride: 16}]}
    - {attn: {kind: MHA, heads: 2, head_dim: 16}}
    """, recurrences="[{start: 1, end: 2, train_recurrence: 2}]"))
    v = get("retro").ablate(cfg.model, Context.from_config(cfg))
    assert [b.id for b in v.spec.blocks] == ["b0", "b2"]
    assert (v.spec.recurrences[0].start, v.spec.recurrences[0].end) == (1, 1)
    assert "b1 removed" in v.change
    only = loads(_yaml("- {ssm: {head_dim: 16, chunk: 16}, ffn: {hidden: 64}}"))
    assert get("ssm").reason(only.model) == "every block is an SSM block; nothing would be left"
    with pytest.raises(AblationError, match="does not apply"):
        get("ssm").apply(only.model)


def test_a_plain_model_reports_every_missing_motif():
    cfg = loads(_yaml("- {attn: {kind: MHA, heads: 2, head_dim: 16}, ffn: {hidden: 64}}"))
    out = ablations(cfg.model, [*MOTIFS, "extra:gated"], Context.from_config(cfg))
    assert list(out) == [*MOTIFS, "extra:gated"]  # none is dropped
    assert isinstance(out["norm"], Variant)
    assert {k: v for k, v in out.items() if k != "norm"} == {
        "retro": "no retro memory",
        "local_global->sliding": "no local_global attention",
        "kv_groups->1": "no attention shares KV heads",
        "rope_theta->default": "every RoPE attention uses the default theta 10000",
        "ssm": "no SSM branch",
        "moe->dense": "no MoE FFN",
        "alibi": "no attention with ALiBi",
        "qk_norm": "no attention with QK-norm",
        "attn_gate": "no attention with the output gate",
        "key_select->dense": "no attention with the top-k key selector",
        "linear->softmax": "no LINEAR attention",
        "mla->mha": "no MLA attention",
        "extra:gated": "no gated extra",
    }


def test_unknown_motif_names():
    with pytest.raises(AblationError, match="unknown motif 'attention'.*extra:gated"):
        get("attention")
    with pytest.raises(AblationError, match="is the motif 'retro'"):
        get("extra:retro")
    with pytest.raises(AblationError, match="unknown motif"):
        get("extra:custom:no-such-component")
    assert get("extra:custom:exp-gater").name == "extra:custom:exp-gater"
    assert get("moe-to-dense").name == "moe->dense"  # no '>' for the shell to redirect


def _yaml(blocks: str, recurrences: str = "[]") -> str:
    indented = "\n".join("    " + line.strip() if line.strip().startswith(("-", "{"))
                         else "      " + line.strip() for line in blocks.strip().splitlines())
    return f"""
model:
  emb: {{dim: 32, vocab: 257}}
  blocks:
{indented}
  recurrences: {recurrences}
data:
  seq_len: 64
  shards: [{{name: "builtin:code"}}]
"""
