"""``evotui bench attention``'s table of attention kinds runs every kind and reports the
estimator's figures beside the measured times (no time is asserted)."""

from __future__ import annotations

from evotui.bench import attention_kinds


def test_every_kind_is_timed_with_its_costs():
    rows = attention_kinds.run("cpu", seq_len=32, head_dim=8, heads=2, window=8, repeats=1)
    by = {r["kind"]: r for r in rows}
    assert set(by) == set(attention_kinds.kinds(2, 8, 8))
    assert all(r["ms"] > 0 and r["ms_at_2x_seq"] > 0 for r in rows)
    assert by["softmax GQA"]["vs_softmax"] == 1.0
    assert by["LINEAR"]["kv_bytes_per_token"] == 0
    assert by["MLA"]["kv_bytes_per_token"] == 2 * (8 + 4)  # latent dim/4 + rope_dim hd/2
    assert by["key_select"]["keys_per_query"] < by["softmax GQA"]["keys_per_query"]
