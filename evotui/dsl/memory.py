"""Training memory of one candidate, estimated from its config (no torch): what a slot must hold.

``training_memory(cfg, device)`` adds up, in bytes:

* ``params``: fp32 weights (the trainer keeps fp32 weights; bf16 autocast casts on the fly);
* ``grads``: one fp32 gradient per weight;
* ``optimizer``: AdamW two fp32 moments per weight, Lion and Muon one (Muon's AdamW fallback
  for embeddings, norms and other non-matrix weights keeps two);
* ``activations`` at the micro-batch (``data.batch_size`` x ``data.seq_len``) kept for the
  backward pass: for every weight a token passes through, its input and output (k of E routed
  experts, each looped block once per loop), the logits and their gradient (fp32), and on CPU
  the attention scores and probabilities (SDPA with a boolean mask materialises them; the CUDA
  backends do not). bf16 activations on CUDA with ``train.bf16``, fp32 otherwise. With
  gradient checkpointing only each block's input is kept, plus one block's activations while it
  is recomputed.

``shards_needed(cfg, capacity)`` is the smallest number k of GPUs (1, 2, 4, 8) of one node
whose FSDP2 shards fit ``capacity`` bytes each, with a tenth kept free: weights, gradients and
optimizer state divide by k, each rank trains ``batch_size / k`` of every micro-batch, and one
block's full weights are gathered at a time. None when even 8 do not fit.

``shards(cfg, capacity)`` is the number of FSDP ranks a candidate trains on, from its
``train.parallel``: ``fsdp`` takes ``train.shards``; ``none`` takes 1; ``auto`` takes
:func:`shards_needed` for a GPU slot of ``capacity`` bytes, and 1 when the capacity is not known
(a CPU slot), when one slot fits, or when even 8 shards would not (it fails as out of memory, as
it would unsharded).

An estimate, not a measurement: allocator fragmentation, workspace buffers and the CUDA context
(about 0.5 GiB) come on top; ``evotui bench train`` measures the real peak.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from evotui.dsl.estimate import _loops, block_manifest, manifest
from evotui.dsl.run import RunConfig

FP32 = 4
SHARD_CHOICES = (1, 2, 4, 8)
HEADROOM = 0.9  # the share of a slot's memory a candidate may plan to use
GPU_SIZES = {"24 GiB": 24 << 30, "40 GiB": 40 << 30, "80 GiB": 80 << 30}


@dataclass(frozen=True)
class Memory:
    device: str  # cpu | cuda
    grad_ckpt: bool
    shards: int
    params: int
    grads: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def _optimizer_bytes(cfg: RunConfig, tensors: dict[str, Any]) -> int:
    name = cfg.train.optimizer.name
    if name == "adamw":
        return sum(2 * FP32 * t.numel for t in tensors.values())
    if name == "lion":
        return sum(FP32 * t.numel for t in tensors.values())
    # muon: one momentum for 2-D hidden matrices, AdamW's two moments for the rest
    return sum((1 if len(t.shape) == 2 and not t.embedding else 2) * FP32 * t.numel
               for t in tensors.values())


def _act_elements_per_token(cfg: RunConfig, device: str) -> tuple[float, float, float]:
    """(kept per token over all blocks, one block application's (recomputed under gradient
    checkpointing), kept at block edges)."""
    spec, n = cfg.model, cfg.data.seq_len
    d = spec.emb.dim
    per_block = []
    for i, block in enumerate(spec.blocks):
        elems = 0.0
        for t in block_manifest(block, f"blocks.{i}", d, spec.norm).values():
            if len(t.shape) == 3 and t.active < 1.0:  # routed experts: k of E per token
                elems += (t.shape[1] + t.shape[2]) * t.per_token * t.active * t.shape[0]
            elif len(t.shape) == 2:  # a matmul: its input and output are kept
                elems += (t.shape[0] + t.shape[1]) * t.per_token
            else:
                elems += 2 * t.shape[0] * t.per_token  # norms, gates: input and output
        attn = getattr(block, "attn", None)
        if attn is not None and device == "cpu":
            elems += 2 * attn.heads * n  # scores and probabilities, one row per token
        per_block.append((elems, _loops(spec, i)))
    edges = float(d * sum(loops for _, loops in per_block))  # each application's input
    return (sum(e * loops for e, loops in per_block),
            max((e for e, _ in per_block), default=0.0), edges)


def training_memory(cfg: RunConfig, device: str = "cuda", grad_ckpt: bool | None = None,
                    shards: int = 1) -> Memory:
    """The estimate for ``device`` (cpu | cuda), with or without gradient checkpointing
    (default: the config's), each of ``shards`` FSDP ranks' share."""
    ckpt = cfg.train.grad_ckpt if grad_ckpt is None else grad_ckpt
    tensors = manifest(cfg.model)
    numel = sum(t.numel for t in tensors.values())
    largest_block = max((sum(t.numel for t in block_manifest(
        b, f"blocks.{i}", cfg.model.emb.dim, cfg.model.norm).values())
        for i, b in enumerate(cfg.model.blocks)), default=0)
    k = max(1, shards)
    gathered = FP32 * largest_block if k > 1 else 0  # one block unsharded at a time
    params = math.ceil(FP32 * numel / k) + gathered
    grads = math.ceil(FP32 * numel / k) + gathered
    optimizer = math.ceil(_optimizer_bytes(cfg, tensors) / k)
    rows = math.ceil(cfg.data.batch_size / k)
    tokens = rows * cfg.data.seq_len
    act_bytes = 2 if device == "cuda" and cfg.train.bf16 else FP32
    every, largest, edges = _act_elements_per_token(cfg, device)
    kept = (edges + largest) if ckpt else every
    logits = 2 * FP32 * cfg.model.emb.vocab  # fp32 logits and their gradient
    activations = math.ceil(tokens * (kept * act_bytes + logits))
    return Memory(device, ckpt, k, params, grads, optimizer, activations)


def shards_needed(cfg: RunConfig, capacity: int, device: str = "cuda",
                  grad_ckpt: bool | None = None) -> int | None:
    """The fewest FSDP shards (GPUs of one node) whose share fits ``capacity`` bytes."""
    for k in SHARD_CHOICES:
        if k > cfg.data.batch_size:
            break  # each rank needs at least one row of every micro-batch
        if cfg.data.batch_size % k:
            continue  # and the same number of rows (as train.shards must divide it)
        if training_memory(cfg, device, grad_ckpt, k).total <= HEADROOM * capacity:
            return k
    return None


def shards(cfg: RunConfig, capacity: int | None = None, device: str = "cuda") -> int:
    """The FSDP ranks ``cfg`` trains on where one slot holds ``capacity`` bytes (see above)."""
    t = cfg.train
    if t.parallel == "fsdp":
        return t.shards
    if t.parallel == "none" or not capacity:
        return 1
    return shards_needed(cfg, capacity, device) or 1


def table(cfg: RunConfig) -> list[dict[str, Any]]:
    """What ``evotui validate`` prints: a row per device kind, without and with gradient
    checkpointing, and for CUDA the shards a 24, 40 or 80 GiB GPU needs."""
    rows = []
    k = cfg.train.shards if cfg.train.parallel == "fsdp" else 1
    for device in ("cpu", "cuda"):
        for ckpt in (False, True):
            row = training_memory(cfg, device, ckpt, k).as_dict()
            if device == "cuda":
                row["shards_needed"] = {size: shards_needed(cfg, cap, device, ckpt)
                                 for size, cap in GPU_SIZES.items()}
            rows.append(row)
    return rows


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f}"


def lines(cfg: RunConfig) -> list[str]:
    """The table as text, for ``evotui validate``."""
    t = cfg.train
    per = f"per each of {t.shards} FSDP ranks" if t.parallel == "fsdp" else "per slot"
    out = [f"training memory {per} at micro-batch {cfg.data.batch_size} x "
           f"{cfg.data.seq_len} (GiB; estimate: params grads optimizer activations = total):"]
    for row in table(cfg):
        kind = "cuda (bf16)" if row["device"] == "cuda" and cfg.train.bf16 else (
            f"{row['device']} (fp32)")
        ckpt = "grad ckpt" if row["grad_ckpt"] else "no grad ckpt"
        text = (f"  {kind:<12} {ckpt:<13} {_gib(row['params'])} {_gib(row['grads'])} "
                f"{_gib(row['optimizer'])} {_gib(row['activations'])} = {_gib(row['total'])}")
        if "shards_needed" in row:
            fits = ", ".join(f"{size}: {k if k else '>8'}"
                             for size, k in row["shards_needed"].items())
            text += f"  FSDP shards per GPU size: {fits}"
        out.append(text)
    out.append("parallel: " + plan(cfg))
    return out


def plan(cfg: RunConfig) -> str:
    """How the executor will train ``cfg``: on how many slots, and why."""
    t = cfg.train
    if t.parallel == "fsdp":
        return (f"fsdp, {t.shards} shards (train.shards): {t.shards} slots of one node at once "
                f"(GPUs, or CPU slots with --device cpu), each training "
                f"{cfg.data.batch_size // t.shards} rows of every micro-batch")
    if t.parallel == "none":
        return "none: one slot per candidate (train.parallel: none)"
    needed = {size: shards_needed(cfg, cap) for size, cap in GPU_SIZES.items()}
    if all(k == 1 for k in needed.values()):
        return "auto: one slot per candidate (it fits a 24 GiB GPU; CPU slots never shard)"
    return ("auto: FSDP shards on a GPU slot too small for it (" + ", ".join(
        f"{size}: {k if k is not None else 'out of memory even over 8'}"
        for size, k in needed.items()) + "); CPU slots never shard")
