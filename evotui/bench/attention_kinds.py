"""The attention kinds and options in ``evotui bench attention``: forward+backward time of a
whole attention branch (projections included) for softmax GQA, ALiBi, QK-norm with an output
gate, LINEAR, MLA and the top-k key selector, at the sequence length given and at twice it
(so a cost linear in T shows as a ratio near 2, a quadratic one near 4), with the estimator's
parameters, FLOPs per token and KV-cache bytes per token of each. Timed in interleaved rounds
like the pattern table (medians), so load that drifts on a shared machine hits every row alike.
"""

from __future__ import annotations

from typing import Any

import torch

from evotui.bench.attention import _time_all
from evotui.dsl.attn_cost import attn_cost, attn_shapes
from evotui.dsl.attn_spec import AttnSpec
from evotui.model.attn_options import build_attention


def kinds(heads: int, head_dim: int, window: int) -> dict[str, dict[str, Any]]:
    """The attention specs compared, by label."""
    base = {"heads": heads, "head_dim": head_dim}
    gqa = base | {"kind": "GQA", "kv_groups": 2 if heads % 2 == 0 else 1}
    width = heads * head_dim
    return {
        "softmax GQA": gqa,
        "GQA + alibi": gqa | {"alibi": True},
        "GQA + qk_norm + gate": gqa | {"qk_norm": True, "gate": "head"},
        "LINEAR": gqa | {"kind": "LINEAR", "chunk": 64},
        "MLA": base | {"kind": "MLA", "kv_latent": max(8, width // 4),
                       "q_latent": max(8, width // 2)},
        "key_select": gqa | {"key_select": {"topk": window, "window": min(64, window)}},
    }


def _fwd_bwd(module: torch.nn.Module, x: torch.Tensor) -> Any:
    x = x.detach().clone().requires_grad_()

    def step() -> None:
        module(x).float().pow(2).mean().backward()

    return step


def run(device: str = "cpu", seq_len: int = 2048, head_dim: int = 64, heads: int = 8,
        batch: int = 1, dtype: torch.dtype = torch.float32, window: int = 192,
        repeats: int = 5) -> list[dict[str, Any]]:
    dev = torch.device(device)
    dim = heads * head_dim
    gen = torch.Generator(device="cpu").manual_seed(0)
    specs = {k: AttnSpec.model_validate(v) for k, v in kinds(heads, head_dim, window).items()}
    cases, labels = [], []
    for label, spec in specs.items():
        torch.manual_seed(0)
        module = build_attention(spec, dim, 2 * seq_len, "auto").to(dev, dtype).train()
        for t in (seq_len, 2 * seq_len):
            x = torch.randn(batch, t, dim, generator=gen).to(dev, dtype)
            cases.append(_fwd_bwd(module, x))
            labels.append((label, t))
    ms = dict(zip(labels, _time_all(cases, dev, repeats), strict=True))
    base = ms[("softmax GQA", seq_len)]
    rows = []
    for label, spec in specs.items():
        cost = attn_cost(spec, seq_len)
        params = sum(int(torch.Size(s).numel()) for s in attn_shapes(spec, "a", dim).values())
        weights = 6 * params  # the projections, once per token (x3: forward + backward)
        rows.append({
            "kind": label, "ms": round(ms[(label, seq_len)], 4),
            "vs_softmax": round(ms[(label, seq_len)] / base, 4),
            "ms_at_2x_seq": round(ms[(label, 2 * seq_len)], 4),
            "growth_2x_seq": round(ms[(label, 2 * seq_len)] / ms[(label, seq_len)], 3),
            "params": params, "flops_per_token": weights + cost.flops,
            "keys_per_query": round(cost.keys, 2), "kv_bytes_per_token": cost.kv_bytes,
        })
    return rows


def print_table(rows: list[dict[str, Any]], echo: Any) -> None:
    echo(f"{'attention kind':<22} {'ms':>9} {'vs softmax':>10} {'2x seq':>7} "
         f"{'params':>9} {'FLOPs/tok':>10} {'keys/q':>7} {'KV B/tok':>8}")
    for r in rows:
        echo(f"{r['kind']:<22} {r['ms']:>9.2f} {r['vs_softmax']:>10.3f} "
             f"{r['growth_2x_seq']:>6.2f}x {r['params']:>9,} {r['flops_per_token']:>10.3g} "
             f"{r['keys_per_query']:>7.1f} {r['kv_bytes_per_token']:>8}")
