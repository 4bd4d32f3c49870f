"""A scale hop of a genome holding every attention kind, option and extra of issue 17: the
width-bound sizes follow the width, the length-bound ones the sequence, and it builds."""

from __future__ import annotations

from evotui.dsl import load, manifest
from evotui.dsl.scale import scale
from evotui.model.lm import build_model
from tests.conftest import ROOT


def test_primitives_hop_in_width_and_length():
    cfg = load(ROOT / "tests" / "evolve" / "primitives.yaml")
    out = scale(cfg, 256, seq_len=512).config
    old = {b.name: b for b in cfg.model.blocks}
    new = {b.name: b for b in out.model.blocks}
    assert new["mla"].attn.kv_latent == 2 * old["mla"].attn.kv_latent
    assert new["mla"].attn.q_latent == 2 * old["mla"].attn.q_latent
    assert new["mla"].attn.rope_dim == new["mla"].attn.head_dim // 2  # re-derived
    sel, sel0 = new["select"].attn.key_select, old["select"].attn.key_select
    assert (sel.topk, sel.window) == (2 * sel0.topk, 2 * sel0.window)  # sqrt(512 / 128)
    mem = {e.type: e for e in new["mla"].extras}
    assert mem["memory_tokens"].heads == 2 * old["mla"].extras[0].heads
    chunk = next(e for e in new["select"].extras if e.type == "chunk_memory")
    assert (chunk.chunk, chunk.stride) == (64, 32)
    model = build_model(out.model, out.data.seq_len, device="meta")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == {k: t.shape for k, t in manifest(out.model).items()}
