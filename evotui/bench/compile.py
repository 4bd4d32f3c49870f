"""``evotui bench compile``: consecutive compiled candidates in one process, as a worker runs
them. Per candidate: graphs, graph breaks, frames left to eager, recompiles after the first
step, compile seconds, and its steady compiled step against the same model's eager step,
measured in alternation; per config: the medians, and the graph breaks
``torch._dynamo.explain`` finds in each distinct MoE layer's forward.

Defaults: tiny and the scalehop seed scaled down (``evotui scale``) to a CPU-sized width,
alternating, ten candidates (seeds 0..9).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from evotui.bench.train import ROOT_CONFIGS, RandomTokens, with_overrides
from evotui.dsl import load, loads, to_data
from evotui.dsl.run import RunConfig
from evotui.dsl.scale import scale
from evotui.model.ffn import MoE
from evotui.train import compiled
from evotui.train.hardware import describe_device
from evotui.train.throughput import perf_counter
from evotui.train.trainer import CandidateTrainer

SCALEHOP = ROOT_CONFIGS / "scalehop_xover-68-8a93.yaml"


def scaled_scalehop(dim: int = 128, seq_len: int = 256) -> RunConfig:
    """The scalehop seed at width ``dim`` (all its blocks, patterns and MoE layers)."""
    return scale(load(SCALEHOP), dim, seq_len=seq_len).config


def _sized(cfg: RunConfig, batch_size: int | None, seq_len: int | None) -> RunConfig:
    data = to_data(cfg)
    if batch_size:
        data["data"]["batch_size"] = batch_size
    if seq_len:
        data["data"]["seq_len"] = seq_len
    return loads(yaml.safe_dump(data))


def moe_graph_breaks(trainer: CandidateTrainer) -> list[int]:
    """Graph breaks of each MoE layer's forward (``torch._dynamo.explain``), on its input."""
    cfg = trainer.cfg
    x = torch.randn(cfg.data.batch_size, cfg.data.seq_len, cfg.model.emb.dim,
                    device=trainer.device)
    out = []
    for layer in trainer.model.modules():
        if isinstance(layer, MoE):
            torch._dynamo.reset()
            out.append(int(torch._dynamo.explain(layer)(x).graph_break_count))
    torch._dynamo.reset()
    return out


def _paired_steps_ms(trainer: CandidateTrainer, steps: int) -> tuple[float | None, float | None]:
    """Median compiled and eager step (ms) of one candidate, measured in alternation on the same
    model (the eager one with its blocks' compiled code set aside, ``Compiler.eager``), so a
    load that changes during the run weighs on both alike. Before them: the compiling first
    step, a compiled warm-up step (the throughput clock's), and an eager warm-up step."""
    total = 2 * steps + 3
    while trainer.clock.steps < 2 or trainer.clock.compile_steps == trainer.clock.steps:
        trainer.timed_step(total)  # compile, then warm up (until a step compiles nothing)
        if trainer.clock.steps >= 6:
            break
    compiled_ms, eager_ms = [], []

    def eager_step() -> float:
        assert trainer.compiler is not None
        with trainer.compiler.eager():
            started = perf_counter()
            trainer.train_step(total)
            return (perf_counter() - started) * 1e3

    eager_step()  # warm-up: the eager blocks' first kernels and allocations
    for _ in range(steps):
        before = trainer.clock.compile_steps
        started = perf_counter()
        trainer.timed_step(total)
        if trainer.clock.compile_steps == before:  # a step that compiled is not a steady one
            compiled_ms.append((perf_counter() - started) * 1e3)
        eager_ms.append(eager_step())

    def median(xs: list[float]) -> float | None:
        return round(statistics.median(xs), 3) if xs else None

    return median(compiled_ms), median(eager_ms)


def run(configs: list[Path] | None, device: str = "cpu", candidates: int = 10, steps: int = 3,
        backend: str = "inductor", batch_size: int | None = None,
        seq_len: int | None = None, progress: Callable[[str], None] | None = None
        ) -> dict[str, Any]:
    """``progress`` hears one line per measured config and candidate as it finishes."""
    say = progress or (lambda text: None)
    dev = torch.device(device)
    if configs:
        cfgs = [(str(p), load(p)) for p in configs]
    else:
        cfgs = [("tiny", load(ROOT_CONFIGS / "tiny.yaml")),  # scaled to the asked length
                ("scalehop@128", scaled_scalehop(seq_len=seq_len or 256))]
    cfgs = [(name, _sized(cfg, batch_size, seq_len)) for name, cfg in cfgs]
    old_backend, compiled.BACKEND = compiled.BACKEND, backend
    rows, per_config = [], {}
    try:
        for name, cfg in cfgs:  # the MoE explain, on an eager model
            eager = CandidateTrainer(with_overrides(cfg, compile=False),
                                     RandomTokens(cfg.model.emb.vocab, dev), device=device)
            per_config[name] = {"moe_graph_breaks": moe_graph_breaks(eager), "pairs": []}
            say(f"{name}: MoE graph breaks {per_config[name]['moe_graph_breaks']}")
            del eager
        for i in range(candidates):
            name, cfg = cfgs[i % len(cfgs)]
            logs: list[str] = []
            trainer = CandidateTrainer(
                with_overrides(cfg, compile=True, seed=i), RandomTokens(cfg.model.emb.vocab, dev),
                device=device, callback=lambda e, logs=logs: logs.append(e.get("text", ""))
                if e["kind"] == "log" else None)
            step_ms, eager_ms = _paired_steps_ms(trainer, steps)
            m = trainer.compiler.metrics() | trainer.clock.metrics()
            per_config[name]["pairs"].append((step_ms, eager_ms))
            rows.append({"candidate": i, "config": name, "step_ms": step_ms,
                         "eager_step_ms": eager_ms,
                         "compile_s": round(m["compile_s"], 3),
                         "graphs": int(m["compile_graphs"]),
                         "graph_breaks": int(m["compile_graph_breaks"]),
                         "eager_frames": int(m["compile_eager_frames"]),
                         "recompiles": int(m["compile_recompiles"]),
                         "compiled": bool(m["compiled"]), "log": logs})
            say(f"#{i} {name}: " + ", ".join(f"{k} {v}" for k, v in rows[-1].items()
                                             if k not in ("candidate", "config", "log")))
            del trainer
    finally:
        compiled.BACKEND = old_backend
    for c in per_config.values():
        pairs = [(s, e) for s, e in c.pop("pairs") if s is not None and e is not None]
        c["compiled_step_ms"] = statistics.median(s for s, _ in pairs) if pairs else None
        c["eager_step_ms"] = statistics.median(e for _, e in pairs) if pairs else None
        if pairs:  # the median of each candidate's own compiled / eager
            c["compiled_vs_eager"] = round(statistics.median(s / e for s, e in pairs), 3)
    return {"device": describe_device(dev), "torch": torch.__version__, "backend": backend,
            "candidates": rows, "configs": per_config,
            "max_recompiles": max((r["recompiles"] for r in rows), default=0),
            "eager_frames": sum(r["eager_frames"] for r in rows),
            "all_compiled": all(r["compiled"] for r in rows)}
