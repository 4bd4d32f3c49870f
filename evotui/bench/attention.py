"""``evotui bench attention``: forward+backward time of every sparsity pattern on every backend.

Each row times one (pattern, backend) on random q, k, v of shape (batch, heads, seq_len,
head_dim), compares its output with the fp32 ``reference`` backend, and relates its time to
dense causal attention on the fastest non-reference backend (``vs_dense``) and to the budget
of the issue's target, 1.5 x its key density x dense causal (``vs_budget``; the fixed
overhead allowed on top is stated in docs/benchmarks.md). Every candidate is timed once per
round, round after round, and the median taken, so load that drifts during a run (a shared
machine) affects every row alike. The JSON records the CPU threads torch used and the load
average before and after the run (``OMP_NUM_THREADS=1`` runs it on one thread).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np
import torch

from evotui.dsl.patterns import Pattern, dense_mask
from evotui.model.attention import attend, available_backends, reference_attention

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WARMUP = 2


def bench_patterns(window: int) -> list[Pattern]:
    """The six patterns, with knobs scaled from one window size."""
    w = window
    return [
        Pattern("none"),
        Pattern("sliding", sw=w),
        Pattern("local_global", sw=w, global_stride=48),  # the scalehop seed's stride
        Pattern("block", block_size=w),
        Pattern("local_block", sw=w, block_size=2 * w, block_stride=4 * w),
        Pattern("dilated", dilation=4, sw=4 * w),
    ]


def tile_density(pattern: Pattern, seq_len: int, tile: int = 128) -> float:
    """Fraction of the causal (tile x tile) blocks that hold any allowed pair: the work a
    block-sparse kernel such as FlexAttention cannot skip, relative to causal attention."""
    m = dense_mask(pattern, seq_len)
    n = -(-seq_len // tile)
    padded = np.zeros((n * tile, n * tile), dtype=bool)
    padded[:seq_len, :seq_len] = m
    tiles = padded.reshape(n, tile, n, tile).any(axis=(1, 3))
    return float(tiles.sum() / (n * (n + 1) / 2))


def _time_all(fns: list[Any], device: torch.device, repeats: int) -> list[float]:
    """Median milliseconds of each function, timed in interleaved rounds."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns:
        for _ in range(WARMUP):
            fn()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            sync()
            out.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def run(
    device: str = "cpu", seq_len: int = 2048, head_dim: int = 64, heads: int = 8,
    batch: int = 1, dtype: str | None = None, window: int = 192, repeats: int = 5,
    backends: list[str] | None = None,
) -> dict[str, Any]:
    """Benchmark every pattern x available backend (only ``backends`` when given; the
    reference is the oracle of every error either way); returns a JSON-able dict."""
    dev = torch.device(device)
    if dtype is None:
        dtype = "bfloat16" if dev.type == "cuda" else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    dt = DTYPES[dtype]
    gen = torch.Generator(device="cpu").manual_seed(0)
    shape = (batch, heads, seq_len, head_dim)
    q, k, v, dy = (torch.randn(shape, generator=gen).to(dev, dt) for _ in range(4))

    load_before = _load()
    cases: list[tuple[Pattern, str, float]] = []
    for pattern in bench_patterns(window):
        ref = reference_attention(q.float(), k.float(), v.float(), pattern)
        for backend in available_backends(pattern, dev, dt):
            if backends is not None and backend not in backends:
                continue
            with torch.no_grad():
                err = (attend(q, k, v, pattern, backend).float() - ref).abs().max().item()
            cases.append((pattern, backend, err))
    fns = [_fwd_bwd(q, k, v, dy, p, b) for p, b, _ in cases]
    timed = [(p, b, ms, err) for (p, b, err), ms in
             zip(cases, _time_all(fns, dev, repeats), strict=True)]
    dense = [ms for p, b, ms, _ in timed if p.kind == "none" and b != "reference"]
    best = min(dense) if dense else None
    flex_causal = next((ms for p, b, ms, _ in timed if p.kind == "none" and b == "flex"), None)
    rows = []
    for p, b, ms, err in timed:
        tiles = tile_density(p, seq_len)
        row = {"pattern": p.kind, "backend": b, "ms": round(ms, 4),
               "vs_dense": round(ms / best, 4) if best else None,
               "density": round(p.density(seq_len), 4), "tile_density": round(tiles, 4),
               "vs_budget": (round(ms / (1.5 * p.density(seq_len) * best), 4) if best
                             else None),
               "max_err": err}
        if flex_causal is not None:
            # the target: no slower than 1.3 x its tile density x causal FlexAttention
            row["vs_flex_causal_budget"] = round(ms / (1.3 * tiles * flex_causal), 4)
        rows.append(row)
    return {"device": str(dev), "device_name": _device_name(dev), "torch": torch.__version__,
            "seq_len": seq_len, "dtype": dtype, "heads": heads, "head_dim": head_dim,
            "batch": batch, "window": window, "threads": torch.get_num_threads(),
            "load_average": [load_before, _load()], "results": rows}


def _load() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    import platform

    return platform.processor() or platform.machine()


def _fwd_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dy: torch.Tensor,
             pattern: Pattern, backend: str) -> Any:
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))

    def step() -> None:
        attend(q, k, v, pattern, backend).backward(dy)

    return step
