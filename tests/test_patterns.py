"""Sparsity predicates: causal, never an empty row, the documented shapes, exact densities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evotui.dsl.patterns import Pattern, dense_mask

PATTERNS = [
    Pattern("none"),
    Pattern("sliding", sw=5),
    Pattern("block", block_size=4, block_stride=4),
    Pattern("block", block_size=6, block_stride=3),
    Pattern("local_global", sw=3, global_stride=5),
    Pattern("dilated", dilation=3),
    Pattern("dilated", dilation=2, sw=7),
    Pattern("local_block", sw=2, block_size=4, block_stride=8),
]


@pytest.mark.parametrize("p", PATTERNS, ids=repr)
def test_causal_with_diagonal(p):
    m = dense_mask(p, 40)
    assert not np.triu(m, 1).any()
    assert m.diagonal().all()


@pytest.mark.parametrize("p", PATTERNS, ids=repr)
def test_numpy_and_torch_agree(p):
    idx = torch.arange(40)
    t = p.allowed(idx[:, None], idx[None, :]).numpy()
    assert (t == dense_mask(p, 40)).all()


def test_documented_shapes():
    q = 20
    row = lambda p: set(np.flatnonzero(dense_mask(p, 24)[q]).tolist())  # noqa: E731
    assert row(Pattern("sliding", sw=3)) == {18, 19, 20}
    assert row(Pattern("local_global", sw=2, global_stride=8)) == {0, 8, 16, 19, 20}
    assert row(Pattern("dilated", dilation=4, sw=10)) == {12, 16, 20}
    assert row(Pattern("dilated", dilation=4)) == {0, 4, 8, 12, 16, 20}
    assert row(Pattern("block", block_size=8, block_stride=8)) == {16, 17, 18, 19, 20}
    # overlapping blocks [12,20), [16,24): query 20 shares only the second with 16..20
    assert row(Pattern("block", block_size=8, block_stride=4)) == {16, 17, 18, 19, 20}
    # gap tokens of local_block still see their window; block members see their block
    assert row(Pattern("local_block", sw=2, block_size=4, block_stride=16)) == {19, 20}
    assert row(Pattern("local_block", sw=2, block_size=6, block_stride=8)) == {16, 17, 18,
                                                                               19, 20}


def test_density_is_exact():
    n = 64
    assert Pattern("none").density(n) == pytest.approx(1.0)
    sw = 8
    expected_keys = (sum(range(1, sw)) + (n - sw + 1) * sw) / n
    assert Pattern("sliding", sw=sw).keys_per_query(n) == pytest.approx(expected_keys)
    assert Pattern("sliding", sw=8).density(2048) < 0.01


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["sliding", "block", "local_global", "dilated", "local_block"]),
    a=st.integers(1, 12), b=st.integers(2, 12), c=st.integers(1, 12), n=st.integers(1, 48),
)
def test_any_knobs_causal_and_nonempty(kind, a, b, c, n):
    knobs = {
        "sliding": {"sw": a},
        "block": {"block_size": b, "block_stride": min(b, c)},
        "local_global": {"sw": a, "global_stride": c},
        "dilated": {"dilation": b, "sw": a if a > 3 else None},
        "local_block": {"sw": a, "block_size": b, "block_stride": c},
    }[kind]
    p = Pattern(kind, **knobs)
    m = dense_mask(p, n)
    assert m.diagonal().all() and not np.triu(m, 1).any()
    assert p.retained_keys(n) <= n
    assert 0 < p.density(n) <= 1.0 + 1e-12
