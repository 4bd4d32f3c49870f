"""The attention primitives beyond plain softmax attention: ALiBi, QK-norm, the output gate,
LINEAR, MLA and the top-k key selector. Each is causal, passes gradient to every weight, builds
exactly the estimator's tensors and matches a straightforward reference."""

from __future__ import annotations

import math

import pytest
import torch

from evotui.dsl import ModelSpec, estimate, manifest, parse
from evotui.dsl.attn_spec import AttnSpec
from evotui.model.attn_options import OptionedAttention, alibi_slopes, build_attention
from evotui.model.linear_attention import LinearAttention, causal_linear_attention
from evotui.model.lm import build_model
from evotui.model.mla import MLAttention

D, T = 32, 24
KINDS = {
    "alibi": {"kind": "GQA", "heads": 4, "head_dim": 8, "kv_groups": 2, "rope": "none",
              "alibi": True},
    "alibi+rope": {"kind": "GQA", "heads": 4, "head_dim": 8, "alibi": True},
    "alibi+window": {"kind": "MHA", "heads": 4, "head_dim": 8, "alibi": True,
                     "sparsity": "sliding", "sw": 5},
    "qk_norm": {"kind": "GQA", "heads": 4, "head_dim": 8, "kv_groups": 2, "qk_norm": True},
    "gate_head": {"kind": "MHA", "heads": 4, "head_dim": 8, "gate": "head"},
    "gate_channel": {"kind": "GQA", "heads": 4, "head_dim": 8, "kv_groups": 4,
                     "gate": "channel"},
    "linear": {"kind": "LINEAR", "heads": 4, "head_dim": 8, "chunk": 5, "rope": "none"},
    "linear+rope+gqa": {"kind": "LINEAR", "heads": 4, "head_dim": 8, "kv_groups": 2,
                        "chunk": 8, "qk_norm": True, "gate": "head"},
    "mla": {"kind": "MLA", "heads": 4, "head_dim": 8, "kv_latent": 12},
    "mla+q_latent": {"kind": "MLA", "heads": 4, "head_dim": 8, "kv_latent": 12, "q_latent": 16,
                     "rope_dim": 4, "alibi": True, "sparsity": "sliding", "sw": 6},
    "mla_nope": {"kind": "MLA", "heads": 4, "head_dim": 8, "kv_latent": 12, "rope": "none"},
    "select": {"kind": "GQA", "heads": 4, "head_dim": 8, "kv_groups": 2,
               "key_select": {"topk": 3, "window": 4, "heads": 2, "dim": 8}},
    "select+alibi": {"kind": "MHA", "heads": 2, "head_dim": 8, "alibi": True, "rope": "none",
                     "key_select": {"topk": 2, "window": 2}},
}


def module(name: str, backend: str = "reference") -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_attention(AttnSpec.model_validate(KINDS[name]), D, T, backend)
    for p in m.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.3)
    return m


@pytest.mark.parametrize("name", KINDS)
def test_a_later_token_never_changes_an_earlier_output(name):
    m = module(name).train()  # training: the selector's distillation path runs too
    x = torch.randn(2, T, D)
    y = m(x)
    for p in (0, 7, T - 1):
        x2 = x.clone()
        x2[:, p] += 3.0 * torch.randn(2, D)
        y2 = m(x2)
        torch.testing.assert_close(y2[:, :p], y[:, :p], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(y2[:, p:], y[:, p:])


@pytest.mark.parametrize("name", KINDS)
def test_every_weight_gets_gradient(name):
    m = module(name).train()
    loss = m(torch.randn(2, T, D)).pow(2).mean()
    if getattr(m, "select", None) is not None:
        loss = loss + m.select.pending  # the indexer learns from its distillation term only
    loss.backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n


@pytest.mark.parametrize("name", KINDS)
def test_built_tensors_are_the_estimators(name):
    spec = parse({"emb": {"dim": D, "vocab": 50}, "blocks": [{"attn": KINDS[name]}]}, ModelSpec)
    built = {k: tuple(v.shape) for k, v in build_model(spec, T, device="meta").state_dict().items()}
    assert built == {k: t.shape for k, t in manifest(spec).items()}
    assert estimate(spec, T).params_total == sum(math.prod(s) for s in built.values())


# -- reference implementations -------------------------------------------------------------

def naive_softmax(q, k, v, allowed, bias=None):
    """Per head and query, a plain loop: q (H, T, d), k/v (H, T, d) already per query head."""
    H, n, d = q.shape
    out = torch.zeros(H, n, v.shape[-1])
    for h in range(H):
        for t in range(n):
            s = torch.tensor([float(q[h, t] @ k[h, j]) / math.sqrt(d)
                              + (0.0 if bias is None else bias(h, t, j)) if allowed(t, j)
                              else -math.inf for j in range(n)])
            out[h, t] = s.softmax(0) @ v[h]
    return out


def heads(x, n, hd):
    return x.view(x.shape[0], n, hd).transpose(0, 1)


def test_alibi_slopes_are_the_papers():
    assert alibi_slopes(8).tolist() == [2.0 ** -(i + 1) for i in range(8)]
    six = alibi_slopes(6).tolist()  # 4 of a power-of-two set, then every other of the 8-set
    assert six[:4] == [0.25, 0.0625, 0.015625, 0.00390625] and six[4:] == [0.5, 0.125]


@pytest.mark.parametrize("name,backend", [("alibi", "reference"), ("alibi", "sdpa"),
                                          ("alibi+window", "sdpa"), ("alibi+window", "chunked"),
                                          ("qk_norm", "sdpa"), ("gate_head", "sdpa"),
                                          ("gate_channel", "sdpa")])
def test_softmax_options_match_a_naive_loop(name, backend):
    m = module(name, backend).eval()
    a = AttnSpec.model_validate(KINDS[name])
    x = torch.randn(1, T, D)
    with torch.no_grad():
        y = m(x)[0]
        q, k, v = heads(m.wq(x[0]), 4, 8), heads(m.wk(x[0]), a.kv_heads, 8), \
            heads(m.wv(x[0]), a.kv_heads, 8)
        if a.qk_norm:
            q = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + 1e-6) * m.q_norm.weight
            k = k * torch.rsqrt(k.pow(2).mean(-1, keepdim=True) + 1e-6) * m.k_norm.weight
        if m.rope is not None:
            q, k = m.rope(q[None], k[None])
            q, k = q[0], k[0]
        g = 4 // a.kv_heads
        k, v = k.repeat_interleave(g, 0), v.repeat_interleave(g, 0)
        slopes = alibi_slopes(4)
        bias = (lambda h, t, j: -float(slopes[h]) * (t - j)) if a.alibi else None
        sw = a.sw or T
        o = naive_softmax(q, k, v, lambda t, j: 0 <= t - j < sw, bias)
        if a.gate == "head":
            o = o * torch.sigmoid(m.gate.wg(x[0])).T[:, :, None]
        elif a.gate == "channel":
            o = o * heads(torch.sigmoid(m.gate.wg(x[0])), 4, 8)
        ref = m.wo(o.transpose(0, 1).reshape(T, 32))
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)


def test_linear_attention_matches_the_quadratic_formula_for_any_chunk():
    torch.manual_seed(1)
    q, k = torch.rand(2, 3, 13, 4) + 0.1, torch.rand(2, 3, 13, 4) + 0.1
    v = torch.randn(2, 3, 13, 5)
    ref = torch.zeros_like(v)
    for t in range(13):
        w = q[:, :, t : t + 1] @ k[:, :, : t + 1].transpose(-2, -1)  # (2, 3, 1, t+1)
        ref[:, :, t] = ((w @ v[:, :, : t + 1]) / w.sum(-1, keepdim=True))[:, :, 0]
    for chunk in (1, 3, 5, 13, 64):
        torch.testing.assert_close(causal_linear_attention(q, k, v, chunk), ref,
                                   atol=1e-5, rtol=1e-5)


def test_linear_module_is_elu_plus_one_attention():
    m = module("linear").eval()
    assert isinstance(m, LinearAttention)
    x = torch.randn(1, T, D)
    with torch.no_grad():
        f = lambda z: torch.nn.functional.elu(z) + 1  # noqa: E731
        q, k, v = (heads(w(x[0]), 4, 8) for w in (m.wq, m.wk, m.wv))
        q, k = f(q), f(k)
        a = (q @ k.transpose(-2, -1)).tril()
        o = (a @ v) / a.sum(-1, keepdim=True)
        ref = m.wo(o.transpose(0, 1).reshape(T, 32))
        torch.testing.assert_close(m(x)[0], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["mla", "mla+q_latent", "mla_nope"])
def test_mla_matches_the_published_equations(name):
    m = module(name, "sdpa").eval()
    assert isinstance(m, MLAttention)
    a = AttnSpec.model_validate(KINDS[name])
    H, hd, rd, L = 4, 8, a.rope_dim or 0, a.kv_latent
    x = torch.randn(1, T, D)[0]
    rms = lambda z, w: z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6) * w  # noqa: E731
    with torch.no_grad():
        q = m.wq_b(rms(m.wq_a(x), m.q_norm.weight)) if a.q_latent else m.wq(x)
        q = q.view(T, H, hd + rd).transpose(0, 1)
        ckv = m.wkv_a(x)
        c, kr = ckv[:, :L], ckv[:, L:]
        kv = m.wkv_b(rms(c, m.kv_norm.weight)).view(T, H, 2 * hd).transpose(0, 1)
        kn, v = kv[..., :hd], kv[..., hd:]
        if rd:
            qr, kr = m.rope(q[None, :, :, hd:], kr[None, None])
            q = torch.cat([q[:, :, :hd], qr[0]], -1)
            k = torch.cat([kn, kr[0].expand(H, T, rd)], -1)
        else:
            k = kn
        slopes = alibi_slopes(H)
        bias = (lambda h, t, j: -float(slopes[h]) * (t - j)) if a.alibi else None
        sw = a.sw or T
        o = naive_softmax(q, k, v, lambda t, j: 0 <= t - j < sw, bias)
        ref = m.wo(o.transpose(0, 1).reshape(T, H * hd))
        torch.testing.assert_close(m(x[None])[0], ref, atol=1e-4, rtol=1e-4)


def test_mla_caches_the_latent_and_the_rotary_key():
    spec = parse({"emb": {"dim": D, "vocab": 50}, "blocks": [{"attn": KINDS["mla+q_latent"]},
                                                             {"attn": KINDS["mla"]}]}, ModelSpec)
    est = estimate(spec, T)
    model = build_model(spec, T)
    per_token = 0
    for b in model.blocks:
        c, kr = b.attn.cache(torch.randn(1, T, D))
        per_token += (c.numel() + kr.numel()) // T * 2  # bf16
    assert est.kv_bytes_per_token == per_token == 2 * ((12 + 4) + (12 + 4))
    mha = parse({"emb": {"dim": D, "vocab": 50}, "blocks": [{"attn": {"kind": "MHA", "heads": 4,
                                                                      "head_dim": 8}}]},
                ModelSpec)
    assert estimate(mha, T).kv_bytes_per_token == 2 * 2 * 4 * 8 > est.kv_bytes_per_token / 2


def test_selector_with_room_for_every_key_is_dense_causal_attention():
    spec = dict(KINDS["select"], key_select={"topk": T, "window": 1})
    torch.manual_seed(0)
    sel = OptionedAttention(AttnSpec.model_validate(spec), D, T, "reference").eval()
    dense = OptionedAttention(AttnSpec.model_validate(spec | {"key_select": None}), D, T,
                              "reference").eval()
    dense.load_state_dict(sel.state_dict(), strict=False)
    x = torch.randn(2, T, D)
    torch.testing.assert_close(sel(x), dense(x), atol=1e-5, rtol=1e-5)


def test_selector_attends_exactly_its_window_and_topk():
    m = module("select").eval()
    x = torch.randn(1, T, D)
    with torch.no_grad():
        scores = m.select.index_scores(x)[0]
        idx, valid = m.select.select(scores[None])
        assert idx.shape[-1] == 3 + 4  # window + topk, whatever T is
        allowed = torch.zeros(T, T, dtype=torch.bool)
        for t in range(T):
            got = set(idx[0, t][valid[0, t]].tolist())
            window = set(range(max(0, t - 3), t + 1))
            assert window <= got and len(got) == min(t + 1, 7)
            rest = set(range(t + 1)) - got  # never scored above a selected key (ties aside)
            if rest:
                assert min(float(scores[t, j]) for j in got - window) >= max(
                    float(scores[t, j]) for j in rest)
            allowed[t, list(got)] = True
        q, k, v = heads(m.wq(x[0]), 4, 8), heads(m.wk(x[0]), 2, 8), heads(m.wv(x[0]), 2, 8)
        q, k = m.rope(q[None], k[None])
        k, v = k[0].repeat_interleave(2, 0), v.repeat_interleave(2, 0)
        o = naive_softmax(q[0], k, v, lambda t, j: bool(allowed[t, j]))
        ref = m.wo(o.transpose(0, 1).reshape(T, 32))
        torch.testing.assert_close(m(x)[0], ref, atol=1e-4, rtol=1e-4)


def test_selector_indexer_learns_from_distillation():
    m = module("select").train()
    for p in m.parameters():
        p.requires_grad_(False)
    params = list(m.select.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=3e-2)
    x = torch.randn(4, T, D)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        m(x)
        m.select.pending.backward()  # what LM.aux_loss adds to the training loss
        losses.append(float(m.select.last_loss))
        opt.step()
    assert losses[-1] < 0.7 * losses[0]


def test_selector_cost_follows_k_not_t():
    def est(seq_len, topk):
        spec = parse({"emb": {"dim": D, "vocab": 50}, "blocks": [{"attn": dict(
            KINDS["select"], key_select={"topk": topk, "window": 4})}]}, ModelSpec)
        return estimate(spec, seq_len).blocks[0]["keys_per_query"]

    assert est(4096, 8) < 12.01 and est(8192, 8) < 12.01
    assert est(4096, 32) > 2 * est(4096, 8)


def test_the_lm_adds_the_distillation_loss_to_its_auxiliary_loss():
    spec = parse({"emb": {"dim": D, "vocab": 50}, "blocks": [{"attn": KINDS["select"]}]},
                 ModelSpec)
    torch.manual_seed(0)
    model = build_model(spec, T).train()
    idx = torch.randint(0, 50, (2, T))
    _, loss = model(idx, idx)
    aux = model.aux_loss()
    sel = model.blocks[0].attn.select
    value = float(aux.detach())
    assert value == pytest.approx(float(sel.last_loss) * sel.distill) and value > 0
    (loss + aux).backward()
    assert sel.wq.weight.grad is not None and sel.wq.weight.grad.abs().sum() > 0
    assert float(model.aux_loss()) == 0.0  # taken once
    model.eval()
    model(idx)
    assert sel.pending is None  # no distillation outside training
