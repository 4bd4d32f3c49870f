"""``evotui bench train``: training throughput, MFU and peak memory of whole configs, plus the
playbook's open questions: fast attention kernels versus plain attention, and Lion and Muon
against AdamW (held-out loss after the same number of steps).

Throughput runs the trainer's real optimizer step (micro-batches, accumulation, autocast,
clipping, compile when asked) on random tokens, so no dataset is needed; the optimizer
comparison trains on the config's real data. Tokens/s is the engine's own figure
(``evotui.train.throughput``): steady-state steps only, with the warm-up and compile seconds
beside it. "Plain" attention is SDPA with the pattern's dense mask (is_causal when dense), in
the same precision as the fast run (bf16 autocast on CUDA), so the comparison is of
attention kernels only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from evotui.dsl import load, loads, to_data
from evotui.dsl.run import RunConfig
from evotui.train.budget import tokens_per_step
from evotui.train.hardware import describe_device, mfu, peak_memory_mb, reset_peak_memory
from evotui.train.throughput import StepClock
from evotui.train.trainer import CandidateTrainer

ROOT_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIGS = ("gpt2_124m.yaml", "scalehop_xover-68-8a93.yaml", "tiny.yaml")
PLAIN = "sdpa"  # the attention "fast" is compared with: SDPA and a dense mask


class RandomTokens:
    """A stand-in dataset for throughput: random token windows, generated on the device."""

    def __init__(self, vocab: int, device: torch.device):
        self.vocab, self.device = vocab, device

    def train_batch(self, step: int, seed: int, batch_size: int, seq_len: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator(device="cpu").manual_seed(seed * 7919 + step)
        x = torch.randint(0, self.vocab, (batch_size, seq_len + 1), generator=g)
        return x[:, :-1], x[:, 1:]


def with_overrides(cfg: RunConfig, **train: Any) -> RunConfig:
    data = to_data(cfg)
    data["train"].update({k: v for k, v in train.items() if v is not None})
    return loads(yaml.safe_dump(data))


def throughput(cfg: RunConfig, device: torch.device, steps: int, warmup: int,
               backend: str = "auto") -> dict[str, Any]:
    """Tokens/s over ``steps`` steady-state optimizer steps after ``warmup`` (at least one)
    warm-up steps, with MFU, peak memory and the compile and warm-up seconds."""
    reset_peak_memory(device)
    trainer = CandidateTrainer(cfg, RandomTokens(cfg.model.emb.vocab, device),
                               device=str(device), backend=backend)
    trainer.clock = StepClock(warmup_steps=max(1, warmup))
    total = max(1, warmup) + steps
    while trainer.clock.steady_steps < steps and trainer.clock.steps < total + 3 * steps:
        trainer.timed_step(total)  # ends in a host sync (loss and grad norm are read)
    clock = trainer.clock
    tps = clock.tokens_per_s()
    step_s = clock.step_s()
    out = {
        "backend": backend, "step_ms": round(step_s * 1e3, 3) if step_s else None,
        "tokens_per_s": round(tps, 1), "steady_steps": clock.steady_steps,
        "tokens_per_step": tokens_per_step(cfg),
        "compile_s": round(clock.compile_s(), 3), "warmup_s": round(clock.warmup_s(), 3),
        "mfu": mfu(trainer.flops_per_token, tps, device, trainer.amp_dtype or torch.float32),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "params_total": sum(p.numel() for p in trainer.model.parameters()),
        "params_active": trainer.params_active,
        "flops_per_token": trainer.flops_per_token,
    }
    if trainer.compiler is not None:
        out.update({k.removeprefix("compile_"): v for k, v in trainer.compiler.metrics().items()
                    if k != "compiled"} | {"compiled": bool(trainer.compiler.compiled)})
    return out


def optimizer_comparison(cfg: RunConfig, device: torch.device, steps: int,
                         cache_dir: Path | None = None) -> dict[str, Any]:
    """Held-out loss after ``steps`` steps for AdamW, Lion and Muon from the same init."""
    from evotui.data import prepare

    dataset = prepare(cfg, cache_dir=cache_dir)
    out: dict[str, Any] = {"config": cfg.model.name, "steps": steps}
    for name in ("adamw", "lion", "muon"):
        variant = to_data(cfg)
        variant["train"]["optimizer"] = {**variant["train"].get("optimizer", {}), "name": name}
        trainer = CandidateTrainer(loads(yaml.safe_dump(variant)), dataset, device=str(device))
        result = trainer.run(steps, total_steps=steps, measure=False)
        losses = trainer.heldout_losses()
        out[name] = {"status": result.status, "stop_reason": result.stop_reason,
                     "heldout_loss": round(sum(losses.values()) / len(losses), 4),
                     "train_loss": round(result.curve[-1]["loss"], 4) if result.curve else None}
    return out


def run(configs: list[Path] | None, device: str, steps: int = 10, warmup: int = 3,
        compile_: bool | None = None, batch_size: int | None = None, seq_len: int | None = None,
        optimizer_steps: int = 60, compare_attention: bool = True,
        compare_optimizers: bool = True) -> dict[str, Any]:
    dev = torch.device(device)
    if configs is None:
        names = DEFAULT_CONFIGS if dev.type == "cuda" else ("tiny.yaml",)
        configs = [ROOT_CONFIGS / n for n in names]
    results = []
    for path in configs:
        cfg = load(path)
        if batch_size or seq_len:
            data = to_data(cfg)
            data["data"]["batch_size"] = batch_size or cfg.data.batch_size
            data["data"]["seq_len"] = seq_len or cfg.data.seq_len
            cfg = loads(yaml.safe_dump(data))
        use_compile = cfg.train.compile and dev.type == "cuda" if compile_ is None else compile_
        cfg = with_overrides(cfg, compile=use_compile)
        row: dict[str, Any] = {"config": str(path), "name": cfg.model.name,
                               "seq_len": cfg.data.seq_len, "batch_size": cfg.data.batch_size,
                               "grad_accum": cfg.train.grad_accum or 1, "compile": use_compile,
                               "bf16": cfg.train.bf16 and dev.type == "cuda"}
        row["fast"] = throughput(cfg, dev, steps, warmup)
        if compare_attention:
            row["plain"] = throughput(cfg, dev, steps, warmup, backend=PLAIN)
            row["fast_vs_plain"] = round(row["fast"]["tokens_per_s"]
                                         / row["plain"]["tokens_per_s"], 3)
        results.append(row)
    out: dict[str, Any] = {"device": describe_device(dev), "torch": torch.__version__,
                           "runs": results}
    if compare_optimizers:
        out["optimizers"] = optimizer_comparison(load(ROOT_CONFIGS / "tiny.yaml"), dev,
                                                 optimizer_steps)
    return out
