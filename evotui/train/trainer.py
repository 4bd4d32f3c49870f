"""Train and evaluate one candidate. Knows nothing about populations.

A :class:`CandidateTrainer` owns one model, its optimizer and its guards. ``run(until_step,
total_steps, rung)`` trains to a step count (rung budgets are cumulative: rung 2 continues a
rung-1 candidate from its checkpoint, optimizer state and schedule position included), then
measures the candidate. The learning-rate schedule spans ``total_steps``, the candidate's
planned training (the last rung's budget), so continuing into a later rung is seamless.

Events go to ``callback(dict)`` (kinds: step, eval, guard, checkpoint, done); ``control()`` is
polled at every step boundary and may answer ``"pause"`` (checkpoint and stop) or ``"kill"``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from evotui.dsl.estimate import estimate
from evotui.dsl.run import RunConfig
from evotui.lifecycle import FINISHED, Status
from evotui.model.lm import LM, build_model, count_parameters
from evotui.train import checkpoint as ckpt
from evotui.train.budget import tokens_per_step
from evotui.train.compiled import Compiler, compile_errors
from evotui.train.guards import FAILING, Guards
from evotui.train.hardware import mfu, peak_memory_mb, reset_peak_memory
from evotui.train.optim import build_optimizer
from evotui.train.probe import config_kwargs, passkey_probe
from evotui.train.schedule import apply_lr, lr_factor
from evotui.train.throughput import StepClock, perf_counter

Callback = Callable[[dict[str, Any]], None]
Control = Callable[[], str | None]


@dataclass
class TrainResult:
    status: Status  # done | stopped (a guard ended it early) | failed | paused | killed
    stop_reason: str | None
    step: int
    tokens: int
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    telemetry: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    inherited: int = 0
    fresh: int = 0
    error: str | None = None
    train_seconds: float = 0.0  # inside training steps during this run() call
    # where the rest of this run() call went: eval points, the final measurement, the checkpoint
    timings: dict[str, float] = field(default_factory=dict)
    first_step_at: float | None = None  # time.monotonic() when its first training step began

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CandidateTrainer:
    def __init__(self, cfg: RunConfig, dataset: Any, *, device: str = "cpu",
                 seed: int | None = None, checkpoint_path: str | Path | None = None,
                 callback: Callback | None = None, control: Control | None = None,
                 backend: str = "auto"):
        self.cfg, self.data = cfg, dataset
        self.device = torch.device(device)
        self.seed = cfg.train.seed if seed is None else seed
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.callback = callback or (lambda event: None)
        self.control = control or (lambda: None)
        torch.manual_seed(self.seed)
        self.model: LM = build_model(cfg.model, cfg.data.seq_len, backend=backend).to(self.device)
        self.model.gradient_checkpointing = cfg.train.grad_ckpt
        self.optimizer = build_optimizer(self.model, cfg.train, self.device.type)
        self.guards = Guards(cfg.train)
        self.step = 0
        self.tokens = 0
        self.train_time = 0.0  # seconds inside training steps only
        self.curve: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []
        self.inherited, self.fresh = 0, len(self.model.state_dict())
        self.transformed = 0  # tensors started from a net2net transform (inherit)
        est = estimate(cfg.model, cfg.data.seq_len)
        self.flops_per_token, self.params_active = est.flops_per_token, est.params_active
        self.amp_dtype = torch.bfloat16 if cfg.train.bf16 and self.device.type == "cuda" else None
        self.forward = self.model
        self.clock = StepClock()  # steady-state throughput (evotui.train.throughput)
        self.compiler: Compiler | None = None  # per-block compile (evotui.train.compiled)
        if cfg.train.compile:
            self.compiler = Compiler(self.model, self._note)
        if cfg.train.init_checkpoint:
            self.inherit(ckpt.load_state(cfg.train.init_checkpoint))

    # -- starting points ----------------------------------------------------------------
    def inherit(self, state: dict[str, torch.Tensor],
                plan: dict[str, dict[str, Any]] | None = None) -> tuple[int, int]:
        """Copy every tensor whose name and shape match; a tensor in ``plan`` (function-
        preserving inheritance, :mod:`evotui.train.net2net`) starts from its transform
        instead; the rest keep their fresh init. Counts ``inherited`` (exact copies),
        ``transformed`` and ``fresh``."""
        from evotui.train.net2net import start_from

        own = self.model.state_dict()
        plan = plan or {}
        matched = {k: v for k, v in state.items()
                   if k in own and k not in plan and own[k].shape == v.shape}
        generator = torch.Generator().manual_seed(self.seed)
        changed = {}
        for k, t in plan.items():
            if k in own:
                out = start_from(own[k], state.get(k), t, generator)
                if out is not None:
                    changed[k] = out
        with torch.no_grad():
            for k, v in (matched | changed).items():
                own[k].copy_(v.to(own[k].dtype))
        self.inherited, self.transformed = len(matched), len(changed)
        self.fresh = len(own) - len(matched) - len(changed)
        return self.inherited, self.fresh

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint: weights, optimizer state, step, tokens, guards."""
        meta = ckpt.load(path, self.model, self.optimizer)
        self.step, self.tokens = int(meta["step"]), int(meta["tokens"])
        self.train_time = float(meta.get("train_time", 0.0))
        self.clock = StepClock.restore(meta.get("clock"))
        self.guards.restore(meta.get("guards", {}))

    def save(self, rung: int) -> str:
        assert self.checkpoint_path is not None
        dtype = torch.bfloat16 if self.cfg.train.checkpoint_dtype == "bfloat16" else None
        meta = {"step": self.step, "tokens": self.tokens, "rung": rung, "seed": self.seed,
                "train_time": self.train_time, "guards": self.guards.state(),
                "clock": self.clock.state()}
        ckpt.save(self.checkpoint_path, self.model, self.optimizer, meta, dtype=dtype)
        self.callback({"kind": "checkpoint", "step": self.step, "path": str(self.checkpoint_path)})
        return str(self.checkpoint_path)

    # -- the loop -----------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, total_steps: int) -> tuple[float, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (loss, grad norm)."""
        cfg, model = self.cfg, self.model
        accum = cfg.train.grad_accum or 1
        model.recurrence_rng.seed(self.seed * 1_000_003 + self.step)  # recurrence: replayable
        torch.manual_seed(self.seed * 1_000_003 + self.step)  # dropout: replayable
        model.train()
        model.progress = self.step / max(1, total_steps)
        apply_lr(self.optimizer, lr_factor(self.step, total_steps, cfg.train))
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(accum):
            x, y = self.data.train_batch(self.step * accum + micro, self.seed,
                                         cfg.data.batch_size, cfg.data.seq_len)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            with self._autocast():
                _, loss = self.forward(x, y)
                aux = model.aux_loss(cfg.train.router_entropy_coeff)
            ((loss + aux) / accum).backward()
            loss_sum += loss.detach() / accum
        clip = cfg.train.clip if cfg.train.clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if hasattr(grad_norm, "full_tensor"):  # sharded (train/fsdp.py): the whole model's
            grad_norm = grad_norm.full_tensor()
        loss_value, norm_value = torch.stack([loss_sum, grad_norm.float()]).tolist()
        if math.isfinite(loss_value) and math.isfinite(norm_value):
            self.optimizer.step()
        self.step += 1
        self.tokens += tokens_per_step(cfg)
        return loss_value, norm_value

    def timed_step(self, total_steps: int) -> tuple[float, float]:
        """``train_step`` timed into the throughput clock (and ``train_time``), noting whether
        it compiled; a compile failure switches the candidate to eager, logged, and the step
        is run again."""
        frames = self.compiler.frames_ok() if self.compiler is not None else 0
        started = perf_counter()
        try:
            loss, norm = self.train_step(total_steps)
        except compile_errors() as e:
            if self.compiler is None or not self.compiler.compiled:
                raise
            self.compiler.fallback(e)
            self.optimizer.zero_grad(set_to_none=True)
            loss, norm = self.train_step(total_steps)
        seconds = perf_counter() - started
        compiled = self.compiler.after_step(frames) if self.compiler is not None else False
        self.train_time += seconds
        self.clock.record(seconds, tokens_per_step(self.cfg), compiled)
        return loss, norm

    def _note(self, text: str) -> None:
        self.callback({"kind": "log", "text": text})

    def run(self, until_step: int, total_steps: int | None = None, rung: int = 1,
            measure: bool = True) -> TrainResult:
        """Train until ``until_step`` (cumulative), then measure. Never raises for a failing
        candidate: out-of-memory and guard failures come back as a failed result."""
        t = self.cfg.train
        if t.max_tokens is not None:  # the cap on a candidate's training tokens
            until_step = min(until_step, max(1, t.max_tokens // tokens_per_step(self.cfg)))
        total = max(total_steps or until_step, until_step)
        reset_peak_memory(self.device)
        time_before = self.train_time
        clock = {"eval_s": 0.0, "measure_s": 0.0, "checkpoint_s": 0.0}
        first_step_at = None
        status, reason, error = Status.DONE, None, None
        try:
            while self.step < until_step:
                command = self.control()
                if command in ("pause", "kill"):
                    status = Status.PAUSED if command == "pause" else Status.KILLED
                    break
                if first_step_at is None:
                    first_step_at = time.monotonic()
                loss, norm = self.timed_step(total)
                reason = self.guards.after_step(self.step, loss, norm)
                if self.step % t.log_interval == 0 or self.step == until_step or reason:
                    self._log(loss, norm)
                    reason = reason or self.guards.after_router_check(self._router_entropy())
                if reason:
                    status = Status.FAILED if reason in FAILING else Status.STOPPED
                    self.callback({"kind": "guard", "step": self.step, "reason": reason})
                    break
                if self.step % t.eval_interval == 0 and self.step < until_step:
                    started = time.perf_counter()
                    self._eval_point()
                    clock["eval_s"] += time.perf_counter() - started
        except torch.OutOfMemoryError:
            status, reason, error = Status.FAILED, "out_of_memory", "out of memory"
        metrics: dict[str, float] = {}
        if status in FINISHED and measure:
            started = time.perf_counter()
            metrics = self.measure()
            clock["measure_s"] = time.perf_counter() - started
            gate = self.guards.after_rung(rung, metrics.get("ppl"))
            if gate:
                status, reason = Status.STOPPED, gate
                self.callback({"kind": "guard", "step": self.step, "reason": gate})
        path = None
        if self.checkpoint_path is not None and (status in FINISHED or status == Status.PAUSED):
            started = time.perf_counter()
            path = self.save(rung)
            clock["checkpoint_s"] = time.perf_counter() - started
        result = TrainResult(status, reason, self.step, self.tokens, metrics, list(self.curve),
                             list(self.evals), self.guards.telemetry(), path, self.inherited,
                             self.fresh, error, self.train_time - time_before, clock,
                             first_step_at)
        self.callback({"kind": "done", "status": status, "reason": reason, "step": self.step})
        return result

    def _router_entropy(self) -> float | None:
        stats = self.model.router_stats()
        if not stats:
            return None
        self.guards.router = {
            "entropy": [float(s["entropy"]) for s in stats],
            "overflow": [float(s["overflow"]) for s in stats],
            "load": [[round(float(v), 4) for v in s["load"]] for s in stats],
        }
        return sum(self.guards.router["entropy"]) / len(stats)

    def _log(self, loss: float, norm: float) -> None:
        tps = self.clock.tokens_per_s()
        lr = self.optimizer.param_groups[0]["lr"]
        point = {"step": self.step, "loss": loss, "lr": lr, "tokens": self.tokens,
                 "tokens_per_s": tps, "grad_norm": norm, "time": self.train_time}
        self.curve.append(point)
        self.callback({"kind": "step", **point})

    def _eval_point(self) -> None:
        losses = self.heldout_losses()
        point = {"step": self.step, "loss": sum(losses.values()) / len(losses),
                 **{f"loss_{tag}": v for tag, v in losses.items()}}
        self.evals.append(point)
        self.callback({"kind": "eval", **point})

    # -- measurement --------------------------------------------------------------------
    @torch.no_grad()
    def heldout_losses(self, loops: int | None = None, batches: int | None = None,
                       tags: list[str] | None = None) -> dict[str, float]:
        """Mean held-out loss per eval tag (default: every tag) over the first ``batches``
        (default ``train.eval_batches``) held-out batches: the same windows for every
        candidate."""
        cfg, model = self.cfg, self.model
        was_training = model.training
        model.eval()
        model.loop_override = loops
        out = {}
        try:
            for tag in tags or self.data.eval_tags:
                windows = self.data.eval_batches(tag, cfg.data.batch_size, cfg.data.seq_len,
                                                 batches or cfg.train.eval_batches)
                total = 0.0
                for x, y in windows:
                    with self._autocast():
                        _, loss = self.forward(x.to(self.device), y.to(self.device))
                    total += float(loss)
                out[tag] = total / len(windows)
        finally:
            model.loop_override = None
            model.train(was_training)
        return out

    def measure(self) -> dict[str, float]:
        """The candidate's measured metrics (never formulas)."""
        cfg, t = self.cfg, self.cfg.train
        losses = self.heldout_losses()
        mean = sum(losses.values()) / len(losses)
        m: dict[str, float] = {"loss": mean, "ppl": _ppl(mean)}
        for tag, v in losses.items():
            m[f"loss_{tag}"], m[f"ppl_{tag}"] = v, _ppl(v)
        # a diagnostic, on a quarter of the first shard's windows: each count, the training
        # count included, on the same windows, so they compare with each other
        quick, first = max(1, t.eval_batches // 4), self.data.eval_tags[:1]
        for rec in cfg.model.recurrences:
            for n in dict.fromkeys([rec.train_recurrence, *rec.test_recurrences]):
                other = self.heldout_losses(loops=n, batches=quick, tags=first)
                m[f"loss@loops{n}"] = sum(other.values()) / len(other)
        m.update(self.clock.metrics())  # throughput: steady-state steps only
        tps = m["throughput"]
        if self.compiler is not None:
            m.update(self.compiler.metrics())
        m["peak_mem_mb"] = peak_memory_mb(self.device)  # before the probe's fine-tune copy
        if t.passkey_eval_seq_len is not None or any(
                k.startswith("passkey") for k in cfg.evolution.objectives):
            kwargs = config_kwargs(t, cfg.data.seq_len) | {"seed": self.seed}
            tok = self.data.tokenizer
            with self.compiler.eager() if self.compiler else contextlib.nullcontext():
                probe = passkey_probe(  # fine-tunes a deep copy: of the eager blocks
                    self.model, self.data.filler, vocab=cfg.model.emb.vocab,
                    exclude=(tok.eot,), device=self.device, amp_dtype=self.amp_dtype, **kwargs)
            m.update({k: float(v) for k, v in probe.items()})
        m["params_total"] = float(count_parameters(self.model))
        m["params_active"] = float(self.params_active)
        m["flops_per_token"] = self.flops_per_token
        util = mfu(self.flops_per_token, tps, self.device, self.amp_dtype or torch.float32)
        if util is not None:
            m["mfu"] = util
        entropy = self._router_entropy()
        if entropy is not None:
            m["router_entropy"] = entropy
        if self.guards.ema is not None:
            m["train_loss"] = self.guards.ema
        return m


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0))
