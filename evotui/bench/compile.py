"""``evotui bench compile``: consecutive compiled candidates in one process, as a worker runs
them. Per candidate: graphs, graph breaks, frames left to eager, recompiles after the first
step, compile seconds and the steady-state step; per config: the same step eager, and the graph
breaks ``torch._dynamo.explain`` finds in each distinct MoE layer's forward.

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


def _steady_step_ms(trainer: CandidateTrainer, steps: int) -> float | None:
    total = steps + 1
    while trainer.clock.steady_steps < steps and trainer.clock.steps < 3 * total:
        trainer.timed_step(total)
    step = trainer.clock.step_s()
    return None if step is None else round(step * 1e3, 3)


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
        cfgs = [("tiny", load(ROOT_CONFIGS / "tiny.yaml")),
                ("scalehop@128", scaled_scalehop())]
    cfgs = [(name, _sized(cfg, batch_size, seq_len)) for name, cfg in cfgs]
    old_backend, compiled.BACKEND = compiled.BACKEND, backend
    rows, per_config = [], {}
    try:
        for name, cfg in cfgs:  # eager first: the baseline, and the MoE explain
            eager = CandidateTrainer(with_overrides(cfg, compile=False),
                                     RandomTokens(cfg.model.emb.vocab, dev), device=device)
            per_config[name] = {"eager_step_ms": _steady_step_ms(eager, steps),
                                "moe_graph_breaks": moe_graph_breaks(eager), "compiled_step_ms": []}
            say(f"{name}: eager step {per_config[name]['eager_step_ms']} ms, MoE graph breaks "
                f"{per_config[name]['moe_graph_breaks']}")
            del eager
        for i in range(candidates):
            name, cfg = cfgs[i % len(cfgs)]
            logs: list[str] = []
            trainer = CandidateTrainer(
                with_overrides(cfg, compile=True, seed=i), RandomTokens(cfg.model.emb.vocab, dev),
                device=device, callback=lambda e, logs=logs: logs.append(e.get("text", ""))
                if e["kind"] == "log" else None)
            step_ms = _steady_step_ms(trainer, steps)
            m = trainer.compiler.metrics() | trainer.clock.metrics()
            per_config[name]["compiled_step_ms"].append(step_ms)
            rows.append({"candidate": i, "config": name, "step_ms": step_ms,
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
        done = [s for s in c["compiled_step_ms"] if s is not None]
        c["compiled_step_ms"] = statistics.median(done) if done else None
        if c["compiled_step_ms"] and c["eager_step_ms"]:
            c["compiled_vs_eager"] = round(c["compiled_step_ms"] / c["eager_step_ms"], 3)
    return {"device": describe_device(dev), "torch": torch.__version__, "backend": backend,
            "candidates": rows, "configs": per_config,
            "max_recompiles": max((r["recompiles"] for r in rows), default=0),
            "eager_frames": sum(r["eager_frames"] for r in rows),
            "all_compiled": all(r["compiled"] for r in rows)}
