"""Attention: every backend against the dense fp32 reference, masks, RoPE kinds, causality."""

from __future__ import annotations

import math
import operator
import warnings

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from evotui.bench.attention import bench_patterns
from evotui.bench.attention import run as bench_run
from evotui.dsl.estimate import block_manifest
from evotui.dsl.model import AttnSpec, BlockSpec
from evotui.dsl.patterns import Pattern, dense_mask
from evotui.model.attention import (
    Attention,
    available_backends,
    flex_attention,
    reference_attention,
    select_backend,
)
from evotui.model.backends import FAMILY, AttentionBackend
from evotui.model.masks import (
    block_mask,
    chunk_layout,
    chunk_plan,
    chunk_work,
    flex_module,
    mask_mod,
    sdpa_mask,
)
from evotui.model.rope import RoPE, rope_frequencies, yarn_mscale

DIM, HEADS, HEAD_DIM, T = 64, 4, 16, 96
ATOL = 1e-5
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# Knobs chosen so that every pattern is genuinely sparse at T (and windows cross blocks).
PATTERNS = {
    "none": {},
    "sliding": {"sw": 16},
    "block": {"block_size": 16, "block_stride": 12},
    "local_global": {"sw": 8, "global_stride": 16},
    "dilated": {"dilation": 3, "sw": 40},
    "local_block": {"sw": 8, "block_size": 16, "block_stride": 32},
}
EXTRA_PATTERNS = {"dilated_unbounded": ("dilated", {"dilation": 4})}
KINDS = {"MHA": {}, "GQA": {"kv_groups": 2}, "MQA": {}}


def make_spec(sparsity: str = "none", kind: str = "GQA", rope: str = "standard",
              **extra: object) -> AttnSpec:
    kw: dict[str, object] = {"kind": kind, "heads": HEADS, "head_dim": HEAD_DIM,
                             "sparsity": sparsity, "rope": rope, **PATTERNS.get(sparsity, {})}
    kw |= KINDS[kind]
    if rope != "none":
        kw["rope_theta"] = 10000.0
    return AttnSpec(**(kw | extra))


def all_patterns() -> list[Pattern]:
    pats = [make_spec(name).pattern() for name in PATTERNS]
    pats += [Pattern(kind, **knobs) for kind, knobs in EXTRA_PATTERNS.values()]
    return pats


def outputs(attn: Attention, x: torch.Tensor, backend: str) -> tuple[torch.Tensor, list]:
    attn.backend = backend
    attn.zero_grad()
    y = attn(x)
    y.square().sum().backward()
    return y.detach(), [p.grad.clone() for p in attn.parameters()]


def cpu_backends(pattern: Pattern) -> list[str]:
    return [b for b in available_backends(pattern, "cpu") if b != "reference"]


# --- backends against the reference ------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("sparsity", list(PATTERNS))
def test_backends_match_reference(sparsity: str, kind: str) -> None:
    torch.manual_seed(0)
    attn = Attention(make_spec(sparsity, kind), DIM, seq_len=T)
    x = torch.randn(2, T, DIM)
    y_ref, g_ref = outputs(attn, x, "reference")
    backends = cpu_backends(attn.pattern)
    assert backends
    for backend in backends:
        y, g = outputs(attn, x, backend)
        torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=1e-5, msg=backend)
        for a, b in zip(g, g_ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=backend)


@pytest.mark.parametrize("rope", ["standard", "linear", "ntk", "yarn", "none"])
def test_rope_kinds_match_reference(rope: str) -> None:
    torch.manual_seed(1)
    attn = Attention(make_spec("local_global", "GQA", rope), DIM, seq_len=T)
    x = torch.randn(2, T, DIM)
    y_ref, _ = outputs(attn, x, "reference")
    for backend in cpu_backends(attn.pattern):
        y, _ = outputs(attn, x, backend)
        torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("length", [T // 2 + 3, 2 * T + 5])
def test_lengths_other_than_seq_len(length: int) -> None:
    torch.manual_seed(2)
    attn = Attention(make_spec("dilated", "GQA", "yarn"), DIM, seq_len=T)
    x = torch.randn(1, length, DIM)
    y_ref, _ = outputs(attn, x, "reference")
    for backend in ("sdpa", "chunked"):
        y, _ = outputs(attn, x, backend)
        torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=1e-5)
    assert attn.rope is not None and attn.rope.cos.shape[0] >= length


def test_flex_path_eager_matches_reference() -> None:
    """The FlexAttention call (BlockMask + enable_gqa) through its unfused eager path, which
    runs on any device; the compiled kernel itself is covered by the GPU tests."""
    torch.manual_seed(3)
    q = torch.randn(1, HEADS, T, HEAD_DIM)
    k, v = torch.randn(2, 1, HEADS // 2, T, HEAD_DIM).unbind(0)
    for pattern in all_patterns():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = flex_attention(q, k, v, pattern, compiled=False)
        torch.testing.assert_close(y, reference_attention(q, k, v, pattern), atol=ATOL, rtol=0)


def test_flex_compiles_once_for_all_window_sizes() -> None:
    """Knobs are tensors inside the mask_mod, so per-layer windows share one compiled graph."""
    torch._dynamo.reset()
    counter = CompileCounter()
    flex = torch.compile(flex_module().flex_attention, backend=counter, dynamic=False)
    q = torch.randn(1, 2, 64, HEAD_DIM)
    for sw in (3, 8, 17, 30, 41, 50, 63, 64, 70):
        p = Pattern("sliding", sw=sw)
        y = flex(q, q, q, block_mask=block_mask(p, 64, "cpu"))
        torch.testing.assert_close(y, reference_attention(q, q, q, p), atol=ATOL, rtol=0)
    assert counter.frame_count == 1


def graph_recorder(targets: list) -> object:
    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        targets.extend(n.target for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    return backend


@pytest.mark.parametrize("backend", ["sdpa", "chunked", "flex"])
def test_compiled_graph_takes_masks_as_constants(backend: str) -> None:
    """Under torch.compile the cached masks enter the graph whole: no arange or floor division
    in it (Inductor miscompiles ``arange(T) // s`` when s does not divide T), no graph break."""
    torch._dynamo.reset()
    torch.manual_seed(12)
    attn = Attention(make_spec("local_block", "GQA", "yarn"), DIM, seq_len=T).eval()
    x = torch.randn(1, T + 7, DIM)
    eager = outputs(attn, x, "reference")[0]
    targets: list = []
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if backend == "flex":  # the CUDA-only backend, traced here through its eager kernel
            def fn(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
                return flex_attention(q, k, k, attn.pattern, compiled=False)

            q = torch.randn(1, HEADS, T + 7, HEAD_DIM)
            k = torch.randn(1, HEADS // 2, T + 7, HEAD_DIM)
            got = torch.compile(fn, backend=graph_recorder(targets), fullgraph=True)(q, k)
            torch.testing.assert_close(got, reference_attention(q, k, k, attn.pattern))
        else:
            attn.backend = backend
            compiled = torch.compile(attn, backend=graph_recorder(targets), fullgraph=True)
            torch.testing.assert_close(compiled(x), eager, atol=ATOL, rtol=1e-5)
    assert targets
    assert not {torch.arange, operator.floordiv, torch.floor_divide} & set(targets), targets


# --- causality and the mask each backend really applies ------------------------------------


@pytest.mark.parametrize("sparsity", list(PATTERNS))
def test_future_tokens_do_not_leak(sparsity: str) -> None:
    torch.manual_seed(4)
    attn = Attention(make_spec(sparsity, "GQA"), DIM, seq_len=64).eval()
    x = torch.randn(1, 64, DIM)
    for t in (0, 17, 40, 63):
        x2 = x.clone()
        x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:])
        for backend in ("reference", *cpu_backends(attn.pattern)):
            attn.backend = backend
            torch.testing.assert_close(attn(x2)[:, : t + 1], attn(x)[:, : t + 1], atol=0, rtol=0)


@pytest.mark.parametrize("backend", ["reference", "sdpa", "chunked"])
def test_dependencies_follow_the_pattern(backend: str) -> None:
    """Output t depends on input s exactly where the pattern lets query t see key s."""
    torch.manual_seed(5)
    n = 40
    for pattern in all_patterns():
        spec = AttnSpec(heads=2, head_dim=8, rope="none", kind="MHA",
                        sparsity=pattern.kind,
                        **{k: v for k, v in pattern.__dict__.items()
                           if k != "kind" and v is not None})
        attn = Attention(spec, 16, seq_len=n, backend=backend)
        x = torch.randn(1, n, 16, requires_grad=True)
        y = attn(x)
        seen = torch.stack([
            torch.autograd.grad(y[0, t].sum(), x, retain_graph=True)[0][0].abs().sum(-1) > 0
            for t in range(n)
        ])
        assert torch.equal(seen, torch.from_numpy(dense_mask(pattern, n))), pattern


# --- masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 37, 128, 200])
def test_masks_equal_dense_mask(n: int) -> None:
    idx = torch.arange(n)
    for pattern in all_patterns():
        expected = torch.from_numpy(dense_mask(pattern, n))
        assert torch.equal(sdpa_mask(pattern, n), expected)
        for device in (None, "cpu"):  # plain int knobs, and 0-d tensor knobs
            assert torch.equal(mask_mod(pattern, device)(0, 0, idx[:, None], idx[None, :]),
                               expected)
        assert sdpa_mask(pattern, n) is sdpa_mask(pattern, n, torch.device("cpu"))  # cached


def test_block_mask_covers_the_pattern() -> None:
    n = 300  # not a multiple of the 128-token tile
    for pattern in all_patterns():
        bm = block_mask(pattern, n, "cpu")
        assert bm is block_mask(pattern, n, "cpu")
        assert bm.shape[-2:] == (n, n)
        # Every allowed (q, k) lies in a block the BlockMask visits.
        blocks = bm.to_dense()[0, 0].bool()
        tile = bm.BLOCK_SIZE[0]
        allowed = torch.from_numpy(dense_mask(pattern, n))
        q, k = allowed.nonzero().unbind(-1)
        assert blocks[q // tile, k // tile].all()


# --- the chunked backend: work follows the attended keys ---------------------------------


LONG = [Pattern("sliding", sw=40), Pattern("local_global", sw=24, global_stride=20),
        Pattern("block", block_size=32, block_stride=48), Pattern("dilated", dilation=3, sw=90),
        Pattern("local_block", sw=16, block_size=40, block_stride=100), Pattern("dilated",
                                                                                dilation=5)]


@pytest.mark.parametrize("n", [300, 517])
def test_chunked_matches_reference_on_long_sequences(n: int) -> None:
    """Long enough that every bounded pattern really runs block-sparse (band < sequence),
    forward and backward, with GQA and a length no chunk size divides."""
    torch.manual_seed(13)
    q = torch.randn(1, 4, n, 8, requires_grad=True)
    k, v = (torch.randn(1, 2, n, 8, requires_grad=True) for _ in range(2))
    for pattern in LONG:
        if pattern.kind != "dilated" or pattern.sw is not None:
            assert chunk_plan(pattern, n).band >= 0, pattern
        y = FAMILY["chunked"].attend(q, k, v, pattern, 0.0, 0.3)
        ref = reference_attention(q, k, v, pattern, scale=0.3)
        torch.testing.assert_close(y, ref, atol=ATOL, rtol=1e-5)
        dy = torch.randn_like(y)
        got = torch.autograd.grad(y, (q, k, v), dy)
        want = torch.autograd.grad(ref, (q, k, v), dy)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("n", [37, 300, 517])
def test_chunk_layout_is_the_pattern(n: int) -> None:
    """Every attended pair of the chunk layout is allowed, and every allowed pair is attended
    exactly once (the global keys never repeat a band key)."""
    for pattern in [*all_patterns(), *LONG]:
        p = chunk_plan(pattern, n)
        blocked, q_pos, k_pos = chunk_layout(pattern, n)
        attended = ~blocked & (q_pos < n)[..., None]
        qs = q_pos[..., None].expand_as(attended)[attended]
        ks = k_pos[:, None, :].expand_as(attended)[attended]
        got = torch.zeros(n, n, dtype=torch.long)
        got.index_put_((qs, ks), torch.ones_like(qs), accumulate=True)
        assert torch.equal(got, torch.from_numpy(dense_mask(pattern, n)).long()), pattern
        assert attended.shape[-1] == p.keys


def test_chunked_work_follows_the_keys_attended() -> None:
    """At T=2048 with window 192 (the bench's patterns) the (query, key) pairs the chunked
    backend computes, counted exactly over its groups' tiles, are a fraction of the causal
    triangle and at most 1.5x the pairs the pattern attends."""
    n = 2048
    causal = n * (n + 1) / 2
    for pattern in bench_patterns(192)[1:]:
        work = chunk_work(pattern, n)
        attended = pattern.keys_per_query(n) * n
        assert attended <= work <= 1.5 * attended, (pattern, work / attended)
        assert work <= 0.3 * causal, (pattern, work / causal)


def alibi(slopes: torch.Tensor) -> object:
    def bias(h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return -slopes.to(q.device)[h] * (q - k)

    return bias


def test_score_bias_in_every_backend_that_takes_one() -> None:
    """An additive bias (ALiBi here) gives the same result on every backend that supports
    one, equal to adding it to the dense scores by hand."""
    torch.manual_seed(14)
    n = 300
    q = torch.randn(2, 4, n, 8)
    k, v = torch.randn(2, 2, 2, n, 8).unbind(0)
    bias = alibi(torch.tensor([0.5, 0.25, 0.125, 0.0625]))
    idx = torch.arange(n)
    for pattern in [Pattern("none"), *LONG]:
        scores = q @ k.repeat_interleave(2, 1).transpose(-1, -2) * 0.3
        scores = scores + bias(torch.arange(4)[:, None, None], idx[:, None], idx[None, :])
        scores = scores.masked_fill(~torch.from_numpy(dense_mask(pattern, n)), float("-inf"))
        want = scores.softmax(-1) @ v.repeat_interleave(2, 1)
        names = available_backends(pattern, "cpu", bias=True)
        assert names == ["reference", "sdpa", "chunked"]
        for name in names:
            got = FAMILY[name].attend(q, k, v, pattern, 0.0, 0.3, bias)
            torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-5, msg=name)


def test_backend_family_contract() -> None:
    for name, backend in FAMILY.items():
        assert isinstance(backend, AttentionBackend) and backend.name == name
    assert not FAMILY["flash"].available(Pattern("none"), "cuda", torch.bfloat16, bias=True)
    with pytest.raises(ValueError, match="with a score bias"):
        select_backend("flash", Pattern("none"), "cpu", bias=True)


def test_broken_flash_attn_falls_back_with_one_line(tmp_path, monkeypatch, caplog) -> None:
    """A flash-attn wheel built for another torch fails with OSError, not ImportError: the
    backend is then unavailable and one log line says why."""
    from evotui.model.backends import flash

    pkg = tmp_path / "flash_attn"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise OSError('libcudart.so.11.0: cannot open')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "flash_attn", raising=False)
    flash.flash_fn.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="evotui.attention"):
            assert flash.flash_fn() is None
            assert flash.flash_fn() is None
            assert "flash" not in available_backends(Pattern("none"), "cuda", torch.bfloat16)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "OSError" in lines[0] and "libcudart" in lines[0]
    finally:
        flash.flash_fn.cache_clear()


# --- RoPE ----------------------------------------------------------------------------------


def rope_of(kind: str, factor: float | None = None, seq_len: int = 64) -> RoPE:
    return RoPE(HEAD_DIM, kind, 10000.0, factor, seq_len)


def test_rope_is_relative() -> None:
    """<rot(q, m), rot(k, n)> depends only on m - n."""
    torch.manual_seed(6)
    q, k = torch.randn(2, HEAD_DIM, dtype=torch.float64).unbind(0)
    for kind, factor in [("standard", None), ("linear", 4.0), ("ntk", 4.0), ("yarn", 4.0)]:
        rope = rope_of(kind, factor)
        qs = q.expand(64, HEAD_DIM)[None, None]
        ks = k.expand(64, HEAD_DIM)[None, None]
        rq, rk = rope(qs, ks)
        scores = (rq[0, 0] @ rk[0, 0].T).double()
        for shift in (0, 3, 20):
            diag = scores.diagonal(-shift)
            torch.testing.assert_close(diag, diag[:1].expand_as(diag), atol=1e-4, rtol=1e-4)


def test_rope_frequencies_by_kind() -> None:
    d, theta, s = HEAD_DIM, 10000.0, 4.0
    std = rope_frequencies("standard", d, theta)
    torch.testing.assert_close(std, theta ** (-torch.arange(0, d, 2).double() / d))
    torch.testing.assert_close(rope_frequencies("linear", d, theta, s), std)
    ntk_theta = theta * s ** (d / (d - 2))
    torch.testing.assert_close(rope_frequencies("ntk", d, theta, s),
                               ntk_theta ** (-torch.arange(0, d, 2).double() / d))
    # YaRN: fast pairs (>= 32 turns over the original context) keep their frequency, slow
    # pairs (< 1 turn) are interpolated by the factor, the pairs between are blended.
    L = 64
    yarn = rope_frequencies("yarn", d, theta, s, seq_len=L)
    turns = L * std / (2 * math.pi)
    assert torch.equal(yarn[turns >= 32], std[turns >= 32])
    torch.testing.assert_close(yarn[turns <= 1], std[turns <= 1] / s)
    mid = (turns > 1) & (turns < 32)
    assert mid.any() and (yarn[mid] < std[mid]).all() and (yarn[mid] > std[mid] / s).all()
    # Linear scales positions: rope_linear at position 4p equals rope_standard at p.
    cos_l, _ = rope_of("linear", s).cos_sin(64, torch.device("cpu"))
    cos_s, _ = rope_of("standard").cos_sin(16, torch.device("cpu"))
    torch.testing.assert_close(cos_l[::4], cos_s)


def test_yarn_equals_standard_at_factor_one_and_differs_above() -> None:
    torch.manual_seed(7)
    x = torch.randn(1, 2, 64, HEAD_DIM)
    std = rope_of("standard")(x, x)
    torch.testing.assert_close(rope_of("yarn", 1.0)(x, x), std, atol=0, rtol=0)
    q, _ = rope_of("yarn", 4.0)(x, x)
    assert not torch.allclose(q, std[0], atol=1e-3)
    # The temperature: q and k each scaled by 0.1 ln(s) + 1.
    assert yarn_mscale(4.0) == pytest.approx(0.1 * math.log(4.0) + 1)
    torch.testing.assert_close(q.norm(dim=-1), x.norm(dim=-1) * yarn_mscale(4.0))
    # ... and through the module.
    spec = {s: make_spec("none", "MHA", s, **({"rope_factor": 1.0} if s == "yarn" else {}))
            for s in ("standard", "yarn")}
    torch.manual_seed(8)
    a = Attention(spec["standard"], DIM, seq_len=64)
    b = Attention(spec["yarn"], DIM, seq_len=64)
    b.load_state_dict(a.state_dict())
    xs = torch.randn(1, 64, DIM)
    torch.testing.assert_close(a(xs), b(xs), atol=0, rtol=0)
    c = Attention(make_spec("none", "MHA", "yarn", rope_factor=8.0), DIM, seq_len=64)
    c.load_state_dict(a.state_dict())
    assert not torch.allclose(a(xs), c(xs), atol=1e-4)


def test_rope_cache_survives_dtype_casts() -> None:
    rope = rope_of("standard").to(torch.bfloat16)
    cos, _ = rope.cos_sin(32, torch.device("cpu"))
    assert cos.dtype == torch.float32
    torch.testing.assert_close(cos, rope_of("standard").cos_sin(32, torch.device("cpu"))[0])
    x = torch.randn(1, 1, 32, HEAD_DIM, dtype=torch.bfloat16)
    assert rope(x, x)[0].dtype == torch.bfloat16


def test_meta_build_then_to_empty_recomputes_rope() -> None:
    with torch.device("meta"):
        attn = Attention(make_spec("sliding", rope="yarn"), DIM, seq_len=T)
    assert attn.wq.weight.is_meta and attn.rope is not None and attn.rope.cos.is_meta
    attn.to_empty(device="cpu")
    want = RoPE(HEAD_DIM, "yarn", 10000.0, 4.0, T).cos_sin(T, torch.device("cpu"))
    torch.testing.assert_close(attn.rope.cos_sin(T, torch.device("cpu")), want)


# --- parameters, backends, dropout ---------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("rope", ["yarn", "none"])
def test_state_dict_matches_manifest(kind: str, rope: str) -> None:
    spec = make_spec("sliding", kind, rope)
    attn = Attention(spec, DIM, seq_len=T)
    want = {name.removeprefix("b.attn."): t.shape
            for name, t in block_manifest(BlockSpec(attn=spec), "b", DIM, "rmsnorm").items()
            if name.startswith("b.attn.")}
    got = {name: tuple(t.shape) for name, t in attn.state_dict().items()}
    assert got == want
    assert set(want) == {"wq.weight", "wk.weight", "wv.weight", "wo.weight"}


def test_backend_selection() -> None:
    dense, window, sparse = Pattern("none"), Pattern("sliding", sw=8), Pattern("block",
                                                                                block_size=8)
    for p in (dense, window, sparse):
        assert available_backends(p, "cpu") == ["reference", "sdpa", "chunked"]
        want = "sdpa" if p.kind == "none" else "chunked"
        assert select_backend("auto", p, "cpu", torch.float32) == want
        assert "flash" not in available_backends(p, "cuda", torch.float32)
    assert "flash" not in available_backends(sparse, "cuda")
    for name in ("flex", "flash"):
        with pytest.raises(ValueError, match="available: reference, sdpa, chunked, auto"):
            select_backend(name, sparse, "cpu")
    with pytest.raises(ValueError, match="unknown attention backend"):
        Attention(make_spec(), DIM, T, backend="triton")
    with pytest.raises(ValueError, match="dropout"):
        Attention(make_spec(dropout=0.1), DIM, T, backend="flex")
    attn = Attention(make_spec("block"), DIM, T, backend="flex")
    with pytest.raises(ValueError, match="not available"):
        attn(torch.randn(1, 8, DIM))


@pytest.mark.parametrize("backend", ["reference", "sdpa", "chunked"])
def test_dropout_only_in_training(backend: str) -> None:
    torch.manual_seed(9)
    attn = Attention(make_spec("sliding", dropout=0.5), DIM, T, backend=backend)
    plain = Attention(make_spec("sliding"), DIM, T, backend=backend)
    plain.load_state_dict(attn.state_dict())
    x = torch.randn(1, 32, DIM)
    torch.testing.assert_close(attn.eval()(x), plain.eval()(x))
    attn.train()
    assert not torch.allclose(attn(x), plain(x), atol=1e-3)


def test_bench_smoke() -> None:
    out = bench_run(seq_len=64, head_dim=16, heads=2, window=8, repeats=1)
    assert out["device"] == "cpu" and out["dtype"] == "float32"
    rows = out["results"]
    assert {r["pattern"] for r in rows} == set(PATTERNS)
    assert {r["backend"] for r in rows} == {"reference", "sdpa", "chunked"}
    assert all(r["max_err"] < 1e-5 and r["ms"] > 0 and 0 < r["density"] <= 1 for r in rows)
    assert min(r["vs_dense"] for r in rows if r["pattern"] == "none"
               and r["backend"] != "reference") == 1.0


# --- CUDA ----------------------------------------------------------------------------------


@gpu
@needs_cuda
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("sparsity", list(PATTERNS))
def test_cuda_backends_match_reference(sparsity: str, kind: str) -> None:
    torch.manual_seed(10)
    attn = Attention(make_spec(sparsity, kind, "yarn"), DIM, seq_len=T).cuda()
    x = torch.randn(2, T + 40, DIM, device="cuda")  # not a multiple of the flex tile
    y_ref, g_ref = outputs(attn, x, "reference")
    backends = [b for b in available_backends(attn.pattern, "cuda", torch.float32)
                if b != "reference"]
    assert "flex" in backends and "sdpa" in backends
    for backend in backends:
        y, g = outputs(attn, x, backend)
        torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4, msg=backend)
        for a, b in zip(g, g_ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3, msg=backend)
    if "flash" in available_backends(attn.pattern, "cuda", torch.bfloat16):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y, _ = outputs(attn, x, "flash")
        torch.testing.assert_close(y.float(), y_ref, atol=3e-2, rtol=3e-2)


@gpu
@needs_cuda
def test_cuda_auto_selection_and_masks() -> None:
    dense, window, sparse = Pattern("none"), Pattern("sliding", sw=8), Pattern("dilated",
                                                                                dilation=2)
    flash = "flash" in available_backends(window, "cuda", torch.bfloat16)
    assert select_backend("auto", dense, "cuda", torch.bfloat16) == ("flash" if flash
                                                                      else "sdpa")
    assert select_backend("auto", dense, "cuda", torch.float32) == "sdpa"
    assert select_backend("auto", sparse, "cuda", torch.bfloat16) == "flex"
    assert select_backend("auto", sparse, "cuda", torch.bfloat16, dropout=0.1) == "sdpa"
    assert block_mask(sparse, 256, "cuda") is block_mask(sparse, 256, "cuda:0")
    assert torch.equal(sdpa_mask(sparse, 100, "cuda").cpu(),
                       torch.from_numpy(dense_mask(sparse, 100)))
