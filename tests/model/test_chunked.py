"""The chunked backend's batched groups: they cover the pattern exactly, and attention through
them equals the reference, forward and backward, in every shape the model can give them."""

from __future__ import annotations

import pytest
import torch

from evotui.dsl.patterns import Pattern, dense_mask
from evotui.model.attention import reference_attention
from evotui.model.backends import FAMILY
from evotui.model.masks import chunk_groups, chunk_plan, chunk_work

PATTERNS = [
    Pattern("sliding", sw=40), Pattern("local_global", sw=24, global_stride=20),
    Pattern("block", block_size=32, block_stride=48), Pattern("block", block_size=64),
    Pattern("dilated", dilation=3, sw=90), Pattern("dilated", dilation=5),
    Pattern("local_block", sw=16, block_size=40, block_stride=100), Pattern("none"),
]


def chunked(q, k, v, pattern, scale=0.3, bias=None):
    return FAMILY["chunked"].attend(q, k, v, pattern, 0.0, scale, bias)


@pytest.mark.parametrize("n", [1, 37, 300, 320, 517])
@pytest.mark.parametrize("groups", [1, 3])
def test_groups_attend_each_allowed_pair_once(n: int, groups: int) -> None:
    """Over all groups, the real queries attend exactly the pairs the pattern allows, each
    once, and every tile row (padding included) attends at least one key."""
    for pattern in PATTERNS:
        tables = chunk_groups(pattern, n, "cpu", groups)
        out_index, parts = tables[0], tables[1:]
        got = torch.zeros(n, n, dtype=torch.long)
        offset = 0
        for q_index, k_index, allowed in (parts[i:i + 3] for i in range(0, len(parts), 3)):
            _, rows, gC, keys = allowed.shape
            C = gC // groups
            assert allowed.any(-1).all(), pattern  # no empty softmax row
            tiles = allowed[0].view(rows, groups, C, keys)
            assert (tiles == tiles[:, :1]).all()  # the same mask for every stacked head
            cols = k_index.view(keys, rows).t()  # stored column-major
            flat = offset + torch.arange(rows * C)
            real = (out_index[q_index] == flat).view(rows, C)
            pairs = tiles[:, 0] & real[..., None]
            qs = q_index.view(rows, C, 1).expand_as(pairs)[pairs]
            ks = cols[:, None, :].expand_as(pairs)[pairs]
            got.index_put_((qs, ks), torch.ones_like(qs), accumulate=True)
            offset += rows * C
        assert torch.equal(got, torch.from_numpy(dense_mask(pattern, n)).long()), pattern
        assert out_index.shape == (n,) and out_index.max() < offset


@pytest.mark.parametrize("n", [1, 20, 64, 150, 320, 333])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # MHA, GQA, MQA
def test_chunked_equals_reference_forward_and_backward(n: int, kv_heads: int) -> None:
    """Odd lengths, lengths under the window (one chunk), multiples of the chunk (queries as
    views, no gather), batch 2, GQA and MQA; q, k, v as the transposed views Attention gives."""
    torch.manual_seed(n * 7 + kv_heads)
    for pattern in PATTERNS:
        q = torch.randn(2, n, 4, 16).transpose(1, 2).requires_grad_()
        k, v = (torch.randn(2, n, kv_heads, 16).transpose(1, 2).requires_grad_()
                for _ in range(2))
        y = chunked(q, k, v, pattern)
        ref = reference_attention(q, k, v, pattern, scale=0.3)
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5, msg=str(pattern))
        dy = torch.randn_like(y)
        got = torch.autograd.grad(y, (q, k, v), dy)
        want = torch.autograd.grad(ref, (q, k, v), dy)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=str(pattern))


def test_chunked_gradcheck() -> None:
    """Gradients of the gathers, groups and scatter back, checked numerically in float64."""
    torch.manual_seed(3)
    for pattern in (Pattern("local_global", sw=6, global_stride=5), Pattern("dilated",
                    dilation=2, sw=9), Pattern("block", block_size=8, block_stride=6)):
        n = 70
        assert chunk_plan(pattern, n).band >= 0, pattern  # really block-sparse
        q = torch.randn(1, 2, n, 4, dtype=torch.float64, requires_grad=True)
        k, v = (torch.randn(1, 1, n, 4, dtype=torch.float64, requires_grad=True)
                for _ in range(2))
        assert torch.autograd.gradcheck(lambda a, b, c, p=pattern: chunked(a, b, c, p),
                                        (q, k, v), fast_mode=True)


def test_score_bias_with_gqa_and_groups() -> None:
    """ALiBi on a pattern split into several groups, with GQA: equal to the dense scores."""
    torch.manual_seed(8)
    n, slopes = 333, torch.tensor([0.5, 0.25, 0.125, 0.0625])

    def bias(h: torch.Tensor, qp: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
        return -slopes[h] * (qp - kp)

    pattern = Pattern("block", block_size=96)
    assert len(chunk_groups(pattern, n)) > 4  # more than one group
    q = torch.randn(2, 4, n, 8)
    k, v = torch.randn(2, 2, 2, n, 8).unbind(0)
    idx = torch.arange(n)
    scores = q @ k.repeat_interleave(2, 1).transpose(-1, -2) * 0.3
    scores = scores + bias(torch.arange(4)[:, None, None], idx[:, None], idx[None, :])
    scores = scores.masked_fill(~torch.from_numpy(dense_mask(pattern, n)), float("-inf"))
    want = scores.softmax(-1) @ v.repeat_interleave(2, 1)
    torch.testing.assert_close(chunked(q, k, v, pattern, bias=bias), want, atol=1e-5,
                               rtol=1e-5)


def test_rows_that_reach_back_less_read_fewer_keys() -> None:
    """A block pattern's chunks read from their block's start only, not a whole band: the
    groups' work is under the fixed band's."""
    n, pattern = 2048, Pattern("block", block_size=192)
    p = chunk_plan(pattern, n)
    assert chunk_work(pattern, n) < 0.6 * p.length * p.keys
    assert len(chunk_groups(pattern, n)) > 4
