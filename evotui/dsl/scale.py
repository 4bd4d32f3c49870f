"""Scale a genome for a hop in width, depth or sequence length (``evotui scale``).

The rules (docs/scale.md has the full list):

- width: attention keeps ``head_dim`` 64, so ``heads = dim / 64``; ``kv_groups`` is kept (it
  must divide the new head count); MQA stays one KV head, MHA one per query head. Dense FFN
  widths keep their ratio to the model width, rounded to a multiple of 64; a MoE layer's
  expert width does the same, rounded to a multiple of 8, so the layer stays a whole number of
  experts. SSM branches keep ``d_state``, ``d_conv`` and ``expand`` (the inner width follows the
  model width). Retro memory widths and the built-in bottleneck components scale with the
  width, and so do MLA's latents (a default ``rope_dim`` is re-derived), the heads of the
  memory extras (their ``head_dim`` is kept) and a branch router's hidden width. A
  ``dt_rank`` or memory width equal to its default is re-derived for the new width.
- sequence: with ``priors.window_scale`` every attention window is re-derived as
  sqrt(seq_len) x window_scale (the loader's own :func:`~evotui.dsl.run.derive_window`);
  without it windows scale by sqrt(new / old seq_len). Global strides and block lengths keep
  their ratio to the block's window (to sqrt of the seq_len ratio for patterns without one);
  retro strides and memory spans, chunk_memory's chunk and stride and the key selector's
  top-k and window follow sqrt of the seq_len ratio; dilation is kept; LINEAR and
  assoc_memory chunks stay within the sequence.
- depth: ``--layers L`` above the current count tiles the block list (block i of the deeper
  model is a copy of block i mod L0 with a fresh id); recurrence spans stay on the original
  blocks. Below it keeps the first L blocks: spans past the end are dropped, spans cut by the
  end are clipped.

Everything else (MoE routing, shared experts, RoPE, gates, the run sections) is carried over.
The result is validated by the same loader a config file goes through. Imports no torch.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Any

from evotui.dsl import components
from evotui.dsl.estimate import Estimate, estimate
from evotui.dsl.loader import dump, loads, parse, to_data
from evotui.dsl.run import RunConfig, derive_window
from evotui.errors import UserError

HEAD_DIM = 64
DENSE_ROUND = 64
EXPERT_ROUND = 8
LENGTH_KNOBS = ("global_stride", "block_size", "block_stride")


@dataclass
class ScaleResult:
    """The scaled config, the estimates before and after, and what changed."""

    config: RunConfig
    yaml: str
    before: Estimate
    after: Estimate
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def scale(cfg: RunConfig, dim: int, layers: int | None = None, seq_len: int | None = None,
          source: str | None = None) -> ScaleResult:
    """``cfg`` hopped to model width ``dim`` (and ``layers`` blocks, ``seq_len`` tokens)."""
    d0, n0, l0 = cfg.model.emb.dim, cfg.data.seq_len, len(cfg.model.blocks)
    n1 = seq_len or n0
    l1 = layers or l0
    _check_dim(cfg, dim, source)
    if n1 < 8:
        raise UserError.single(f"{n1} is too short; use at least 8", path="--seq-len",
                               source=source)
    data = to_data(cfg)
    model = data["model"]
    changes: list[str] = []
    notes: list[str] = []
    if l1 != l0:
        _depth(model, l1, changes, notes)
    hop = _Hop(d0, dim, n0, n1, cfg.priors.window_scale)
    for block in model["blocks"]:
        hop.block(block)
    model["emb"]["dim"] = dim
    data["data"]["seq_len"] = n1
    changes += hop.summary()
    if (dim != d0 or l1 != l0) and data["train"].pop("init_checkpoint", None):
        notes.append("train.init_checkpoint dropped: its weights have the old shapes "
                     "(the scaled model starts fresh)")
    new = parse(data, RunConfig, source=source)
    text = dump(new)
    if to_data(loads(text, source=source)) != to_data(new):  # what is written loads back
        raise AssertionError("the scaled config does not load back to itself")
    before, after = estimate(cfg.model, n0), estimate(new.model, n1)
    if n1 != n0:
        per_step = cfg.data.batch_size * (cfg.train.grad_accum or 1)
        notes.append(f"tokens per optimizer step {per_step * n0:,} -> {per_step * n1:,} "
                     "(data.batch_size and train.grad_accum are kept)")
    notes += _rung0_notes(new, after)
    return ScaleResult(new, text, before, after, changes, notes)


def valid_dims(cfg: RunConfig) -> tuple[int, str]:
    """The step every valid width is a multiple of, and why."""
    step, why = HEAD_DIM, f"the head width {HEAD_DIM}"
    for b in cfg.model.blocks:
        a = b.attn
        if a is not None and a.kind == "GQA" and a.kv_groups and a.kv_groups > 1:
            lcm = math.lcm(step, HEAD_DIM * a.kv_groups)
            if lcm != step:
                step = lcm
                why = f"{HEAD_DIM} x kv_groups {a.kv_groups} (kv_groups must divide the heads)"
    return step, why


def _check_dim(cfg: RunConfig, dim: int, source: str | None) -> None:
    if dim < HEAD_DIM:
        raise UserError.single(f"{dim} is below one head ({HEAD_DIM}); use {HEAD_DIM} or more",
                               path="--dim", source=source)
    step, why = valid_dims(cfg)
    bad = _ssm_conflict(cfg, dim)
    if dim % step == 0 and bad is None:
        return
    below = next((d for d in range(dim - dim % step, 0, -step)
                  if d < dim and _ssm_conflict(cfg, d) is None), None)
    above = next((d for d in range(dim - dim % step + step, dim + 1000 * step, step)
                  if _ssm_conflict(cfg, d) is None), None)
    near = " or ".join(str(d) for d in (below, above) if d is not None and d >= HEAD_DIM)
    reason = bad if dim % step == 0 else f"not a multiple of {why}"
    raise UserError.single(f"{dim} is {reason}; nearest valid: {near}", path="--dim",
                           source=source)


def _ssm_conflict(cfg: RunConfig, dim: int) -> str | None:
    for i, b in enumerate(cfg.model.blocks):
        s = b.ssm
        if s is not None and (s.expand * dim) % s.head_dim:
            return (f"not usable by model.blocks[{i}].ssm: head_dim {s.head_dim} must divide "
                    f"expand x dim ({s.expand} x {dim})")
    return None


def _depth(model: dict[str, Any], layers: int, changes: list[str], notes: list[str]) -> None:
    blocks = model["blocks"]
    l0 = len(blocks)
    if layers > l0:
        ids = {b["id"] for b in blocks}
        for i in range(l0, layers):
            copy_of = copy.deepcopy(blocks[i % l0])
            copy_of["id"] = _fresh_id(copy_of["id"], i // l0, ids)
            ids.add(copy_of["id"])
            blocks.append(copy_of)
        changes.append(f"blocks {l0} -> {layers} (blocks {l0}..{layers - 1} repeat the "
                       f"pattern of blocks 0..{l0 - 1} with fresh ids)")
        return
    del blocks[layers:]
    changes.append(f"blocks {l0} -> {layers} (the first {layers} kept)")
    kept = []
    for rec in model.get("recurrences", []):
        span = f"{rec['start']}..{rec['end']}"
        if rec["start"] >= layers:
            notes.append(f"recurrence over blocks {span} dropped: those blocks are gone")
            continue
        if rec["end"] >= layers:
            rec["end"] = layers - 1
            notes.append(f"recurrence over blocks {span} clipped to {rec['start']}..{layers - 1}")
        kept.append(rec)
    model["recurrences"] = kept


def _fresh_id(base: str, repeat: int, taken: set[str]) -> str:
    suffix = f"-r{repeat}"
    stem = re.sub(r"-r\d+$", "", base)[: 32 - len(suffix) - 3]
    out = stem + suffix
    n = 0
    while out in taken:
        n += 1
        out = f"{stem}{suffix}{n}"
    return out


def _aligned(value: float, old: int) -> int:
    """``value`` rounded to a multiple of the largest power of two (at most 16) dividing
    ``old``, so lengths and widths keep the alignment they had."""
    step = min(16, old & -old)
    return max(step, round(value / step) * step)


def _rounded(value: float, step: int) -> int:
    return max(step, round(value / step) * step)


class _Hop:
    """The per-block rules of one hop; collects a readable list of what changed."""

    def __init__(self, d0: int, d1: int, n0: int, n1: int, window_scale: float | None) -> None:
        self.d0, self.d1, self.n0, self.n1 = d0, d1, n0, n1
        self.ws = window_scale
        self.width = d1 / d0
        self.length = math.sqrt(n1 / n0)
        self.seen: dict[str, dict[str, int]] = {}

    def record(self, what: str, old: Any, new: Any) -> None:
        if old != new:
            key = f"{what} {old} -> {new}"
            self.seen.setdefault(key, {"n": 0})["n"] += 1

    def summary(self) -> list[str]:
        out = []
        if self.d1 != self.d0:
            out.append(f"width {self.d0} -> {self.d1}")
        if self.n1 != self.n0:
            out.append(f"seq_len {self.n0} -> {self.n1}")
        return out + [f"{k} (x{v['n']})" if v["n"] > 1 else k for k, v in self.seen.items()]

    def scaled(self, value: int, ratio: float) -> int:
        """A length times ``ratio``, on the old value's alignment, within the sequence."""
        if ratio == 1:
            return min(value, self.n1)
        return max(1, min(self.n1, _aligned(value * ratio, value)))

    def block(self, b: dict[str, Any]) -> None:
        if "attn" in b:
            self.attn(b["attn"])
        if "ffn" in b:
            self.ffn(b["ffn"])
        if "ssm" in b:
            self.ssm(b["ssm"])
        for e in b.get("extras", []):
            self.extra(e)

    def attn(self, a: dict[str, Any]) -> None:
        heads = self.d1 // HEAD_DIM
        self.record("attn heads x head_dim", f"{a['heads']}x{a['head_dim']}",
                    f"{heads}x{HEAD_DIM}")
        old_head_dim = a["head_dim"]
        a["heads"], a["head_dim"] = heads, HEAD_DIM
        if a["kind"] == "MQA":
            a["kv_groups"] = heads
        sw = a.get("sw")
        ratio = self.length
        if sw is not None:
            if self.ws is not None and sw == derive_window(self.n0, self.ws):
                new_sw = derive_window(self.n1, self.ws)  # the run's default window
            else:
                new_sw = self.scaled(sw, self.length)  # keeps this block's own window scale
            ratio = new_sw / sw
            self.record("attn sw", sw, new_sw)
            a["sw"] = new_sw
        for knob in LENGTH_KNOBS:
            if a.get(knob) is not None:
                new = self.scaled(a[knob], ratio)
                self.record(f"attn {knob}", a[knob], new)
                a[knob] = new
        if a["sparsity"] == "block" and a.get("block_stride", 0) > a["block_size"]:
            a["block_stride"] = a["block_size"]
        self.attn_kinds(a, old_head_dim, ratio)

    def attn_kinds(self, a: dict[str, Any], old_head_dim: int, ratio: float) -> None:
        """MLA latents follow the width (a default rotary width is re-derived), the key
        selector's top-k and window the sequence length, LINEAR's chunk stays within it."""
        for knob in ("kv_latent", "q_latent"):
            if a.get(knob) is not None:
                new = _aligned(a[knob] * self.width, a[knob])
                self.record(f"attn {knob}", a[knob], new)
                a[knob] = new
        if a.get("rope_dim") == max(2, old_head_dim // 2 // 2 * 2):
            del a["rope_dim"]
        if a.get("chunk") is not None and a["chunk"] > self.n1:
            self.record("attn chunk", a["chunk"], self.n1)
            a["chunk"] = self.n1
        sel = a.get("key_select")
        if sel is not None:
            for knob in ("topk", "window"):
                new = self.scaled(sel[knob], self.length)
                self.record(f"key_select {knob}", sel[knob], new)
                sel[knob] = new

    def ffn(self, f: dict[str, Any]) -> None:
        old = f["hidden"]
        if f.get("type") == "moe":
            n = f["n_experts"]
            f["hidden"] = _rounded(old / n * self.width, EXPERT_ROUND) * n
        else:
            f["hidden"] = _rounded(old * self.width, DENSE_ROUND)
        self.record(f"ffn {f.get('type', 'dense')} hidden", old, f["hidden"])

    def ssm(self, s: dict[str, Any]) -> None:
        if s.get("dt_rank") == math.ceil(self.d0 / 16):  # the default: re-derived on load
            del s["dt_rank"]
        if s["chunk"] > self.n1:
            self.record("ssm chunk", s["chunk"], self.n1)
            s["chunk"] = self.n1

    def extra(self, e: dict[str, Any]) -> None:
        if e["type"] == "retro":
            if e.get("mem_dim") == max(1, self.d0 // 4):  # the default: re-derived on load
                del e["mem_dim"]
            elif e.get("mem_dim") is not None:
                e["mem_dim"] = _aligned(e["mem_dim"] * self.width, e["mem_dim"])
            if self.n1 == self.n0:
                return
            stride = self.scaled(e["stride"], self.length)
            slots = max(1, round(e["memory_tokens"] * self.length / stride))
            memory = min(self.n1 // stride * stride, slots * stride)
            self.record("retro stride", e["stride"], stride)
            self.record("retro memory_tokens", e["memory_tokens"], memory)
            e["stride"], e["memory_tokens"] = stride, memory
        elif e["type"] in ("memory_tokens", "chunk_memory", "assoc_memory"):
            heads = max(1, round(e["heads"] * self.width))  # head_dim kept, like attention's
            self.record(f"{e['type']} heads", e["heads"], heads)
            e["heads"] = heads
            for knob in ("chunk", "stride"):
                if e.get(knob) is not None:
                    new = (self.scaled(e[knob], self.length) if e["type"] == "chunk_memory"
                           else min(e[knob], self.n1))
                    self.record(f"{e['type']} {knob}", e[knob], new)
                    e[knob] = new
        elif e["type"] == "branch_router" and e.get("hidden") is not None:
            e["hidden"] = _aligned(e["hidden"] * self.width, e["hidden"])
        elif e["type"] == "custom":
            comp = components.get(e["name"])
            if comp is not None and comp.params is components.BottleneckParams:
                old = e["params"]["dim"]
                e["params"]["dim"] = _aligned(old * self.width, old)
                self.record(f"{e['name']} dim", old, e["params"]["dim"])


def _rung0_notes(cfg: RunConfig, est: Estimate) -> list[str]:
    r = cfg.evolution.rung0_thresholds
    checks = (
        ("max_params", r.max_params, est.params_total, "above"),
        ("max_active_params", r.max_active_params, est.params_active, "above"),
        ("max_flops_per_token", r.max_flops_per_token, est.flops_per_token, "above"),
        ("max_kv_bytes_per_token", r.max_kv_bytes_per_token, est.kv_bytes_per_token, "above"),
        ("max_layers", r.max_layers, est.layers, "above"),
        ("min_layers", r.min_layers, est.layers, "below"),
    )
    out = []
    for name, limit, value, side in checks:
        if limit is None:
            continue
        if (value > limit) if side == "above" else (value < limit):
            out.append(f"the scaled model is {side} evolution.rung0_thresholds.{name} "
                       f"({limit:g} vs {value:g}); change it, or the seed fails rung 0")
    return out
