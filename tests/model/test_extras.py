"""The extras memory_tokens, chunk_memory, assoc_memory, layer_scale and branch_router: causal,
every weight trained, built exactly as estimated, and equal to a straightforward reference."""

from __future__ import annotations

import math

import pytest
import torch

from evotui.dsl import ModelSpec, estimate, manifest, parse
from evotui.dsl.extras_spec import AssocMemoryExtra, ChunkMemoryExtra, MemoryTokensExtra
from evotui.model.lm import build_model
from evotui.model.memory_extras import AssocMemory, ChunkMemory, MemoryTokens

D, T, V = 32, 20, 40
A = {"kind": "GQA", "heads": 2, "head_dim": 16}
BLOCKS = {
    "memory_tokens": {"attn": A, "extras": [{"type": "memory_tokens", "tokens": 4, "heads": 2,
                                             "head_dim": 8}]},
    "chunk_memory": {"attn": A, "extras": [{"type": "chunk_memory", "chunk": 6, "stride": 4,
                                            "heads": 2, "head_dim": 8}]},
    "assoc_memory": {"attn": A, "extras": [{"type": "assoc_memory", "heads": 2, "head_dim": 8,
                                            "chunk": 5, "gating_weight": 0.5}]},
    "layer_scale": {"attn": A, "ffn": {"hidden": 32},
                    "extras": [{"type": "layer_scale", "targets": ["attn", "ffn"]}]},
    "branch_router": {"attn": A, "ffn": {"hidden": 32},
                      "extras": [{"type": "retro", "memory_tokens": 8, "stride": 4},
                                 {"type": "branch_router", "targets": ["attn", "ffn", "retro"],
                                  "hidden": 8},
                                 {"type": "gated", "targets": ["ffn"]}]},
    "router+ssm+scale": {"attn": A, "ssm": {"head_dim": 16, "chunk": 8},
                         "extras": [{"type": "branch_router", "targets": ["attn", "ssm"]},
                                    {"type": "layer_scale", "targets": ["ssm"], "init": 0.5,
                                     "learnable": False}]},
}


def spec_of(name: str) -> ModelSpec:
    return parse({"emb": {"dim": D, "vocab": V}, "blocks": [BLOCKS[name]]}, ModelSpec)


@pytest.mark.parametrize("name", BLOCKS)
def test_a_later_token_never_changes_an_earlier_output(name):
    torch.manual_seed(0)
    m = build_model(spec_of(name), T).eval()
    idx = torch.randint(0, V, (2, T))
    with torch.no_grad():
        ref, _ = m(idx)
        for p in (1, 9, T - 1):
            changed = idx.clone()
            changed[:, p] = (changed[:, p] + 7) % V
            out, _ = m(changed)
            torch.testing.assert_close(out[:, :p], ref[:, :p], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", BLOCKS)
def test_every_weight_gets_gradient_and_the_build_is_the_estimate(name):
    spec = spec_of(name)
    torch.manual_seed(0)
    m = build_model(spec, T).train()
    idx = torch.randint(0, V, (2, T))
    _, loss = m(idx, idx)
    loss.backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n
    built = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert built == {k: t.shape for k, t in manifest(spec).items()}
    assert estimate(spec, T).params_total == sum(math.prod(s) for s in built.values())


def heads(x, h=2, hd=8):
    return x.view(x.shape[0], h, hd).transpose(0, 1)


def test_memory_tokens_read_the_slots_with_softmax():
    torch.manual_seed(0)
    m = MemoryTokens(MemoryTokensExtra(tokens=4, heads=2, head_dim=8, gating_weight=0.5), D)
    h = torch.randn(T, D)
    with torch.no_grad():
        q, k, v = heads(m.wq(h)), heads(m.mem_k), heads(m.mem_v)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), -1)
        ref = 0.5 * m.wo((att @ v).transpose(0, 1).reshape(T, 16))
        torch.testing.assert_close(m(h[None])[0], ref)


def test_chunk_memory_reads_the_summaries_ending_at_or_before_each_position():
    torch.manual_seed(0)
    m = ChunkMemory(ChunkMemoryExtra(chunk=6, stride=4, heads=2, head_dim=8), D)
    h = torch.randn(T, D)
    with torch.no_grad():
        ends = list(range(3, T, 4))
        mem = torch.stack([h[max(0, e - 5): e + 1].mean(0) for e in ends])
        q, k, v = heads(m.wq(h)), heads(m.wk(mem)), heads(m.wv(mem))
        out = torch.zeros(2, T, 8)
        for t in range(T):
            seen = [i for i, e in enumerate(ends) if e <= t]
            if seen:
                att = torch.softmax(q[:, t : t + 1] @ k[:, seen].transpose(-2, -1) / math.sqrt(8),
                                    -1)
                out[:, t] = (att @ v[:, seen])[:, 0]
        ref = m.wo(out.transpose(0, 1).reshape(T, 16))
        torch.testing.assert_close(m(h[None])[0], ref, atol=1e-5, rtol=1e-5)
        assert ref[:3].abs().max() == 0  # before the first summary there is nothing to read


def test_assoc_memory_is_causal_linear_attention():
    torch.manual_seed(0)
    m = AssocMemory(AssocMemoryExtra(heads=2, head_dim=8, chunk=3, gating_weight=0.25), D)
    h = torch.randn(T, D)
    f = lambda z: torch.nn.functional.elu(z) + 1  # noqa: E731
    with torch.no_grad():
        q, k, v = f(heads(m.wq(h))), f(heads(m.wk(h))), heads(m.wv(h))
        a = (q @ k.transpose(-2, -1)).tril()
        ref = 0.25 * m.wo(((a @ v) / a.sum(-1, keepdim=True)).transpose(0, 1).reshape(T, 16))
        torch.testing.assert_close(m(h[None])[0], ref, atol=1e-5, rtol=1e-5)


def test_layer_scale_multiplies_its_branches():
    torch.manual_seed(0)
    scaled = build_model(spec_of("layer_scale"), T).eval()
    plain_spec = parse({"emb": {"dim": D, "vocab": V}, "blocks": [
        {"attn": A, "ffn": {"hidden": 32}}]}, ModelSpec)
    plain = build_model(plain_spec, T).eval()
    plain.load_state_dict(scaled.state_dict(), strict=False)
    x = torch.randn(2, T, D)
    b, p = scaled.blocks[0], plain.blocks[0]
    with torch.no_grad():
        h = x + 0.1 * p.attn(p.attn_norm(x))
        ref = h + 0.1 * p.ffn(p.ffn_norm(h))
        torch.testing.assert_close(b(x, x), ref)


def test_branch_router_is_a_per_token_mixture_of_parallel_branches():
    torch.manual_seed(0)
    m = build_model(spec_of("router+ssm+scale"), T).eval()
    b = m.blocks[0]
    r = b.extras[0]
    x = torch.randn(2, T, D)
    with torch.no_grad():
        w = 2 * torch.softmax(r.w(r.norm(x)), -1)
        ref = x + w[..., :1] * b.attn(b.attn_norm(x)) + w[..., 1:] * 0.5 * b.ssm(b.ssm_norm(x))
        torch.testing.assert_close(b(x, x), ref, atol=1e-5, rtol=1e-5)
