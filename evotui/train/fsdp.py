"""Training one candidate sharded over k processes with FSDP2 (``fully_shard``): for a candidate
whose training memory (``evotui.dsl.memory``) does not fit one GPU.

Every rank runs the same :class:`ShardedTrainer` (the candidate trainer, sharded): the model is
built whole, takes its starting point (a parent's tensors or a checkpoint to resume) whole, and
is then sharded block by block (each block one FSDP unit, the embeddings, norm and head the
root's), so each rank holds 1/k of the weights, gradients and optimizer state. Each rank trains
on its share of every micro-batch (rows ``rank::k``); FSDP averages the gradients, so a step is
the unsharded step on the whole micro-batch. Losses and gradient norms are averaged over the
ranks, so every rank's guards decide alike; evaluation runs on every rank alike. A pause or a
kill is rank 0's ``control()`` answer, broadcast at each step boundary, so every rank stops at
the same step.

The checkpoint is the same single safetensors file as any candidate's: the full state (weights
and optimizer) is gathered to rank 0, which writes it through :mod:`evotui.train.checkpoint`, so
inheritance, ablation and export read it unchanged. :func:`process_group` joins and leaves the
group (gloo on CPU, NCCL on CUDA); :func:`train_rank` is one rank's whole job inside it, for
whatever starts the k processes (``evotui.engine.sharded`` for an executor's job).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard

from evotui.dsl.run import RunConfig
from evotui.model.lm import build_model
from evotui.train import checkpoint as ckpt
from evotui.train.optim import build_optimizer
from evotui.train.trainer import CandidateTrainer, TrainResult

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


class _Rows:
    """A dataset whose training batches are this rank's rows of every micro-batch."""

    def __init__(self, dataset: Any, rank: int, world: int):
        self._data, self.rank, self.world = dataset, rank, world

    def train_batch(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._data.train_batch(*args, **kwargs)
        return x[self.rank::self.world], y[self.rank::self.world]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 units: each block, then the root (embeddings, final norm, head)."""
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


COMMANDS = (None, "pause", "kill")  # what control() answers, by the code a broadcast carries


def _wire() -> torch.device:
    """Where a collective's tensors live: NCCL reduces CUDA tensors only."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _mean(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=_wire())
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


@contextlib.contextmanager
def process_group(rank: int, world: int, device: str = "cpu",
                  master: str = "127.0.0.1:29511") -> Iterator[None]:
    """Join the group of ``world`` ranks at ``master`` (gloo on CPU, NCCL on CUDA); leave it."""
    host, port = master.rsplit(":", 1)
    os.environ.update(MASTER_ADDR=host, MASTER_PORT=port)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(minutes=10))
    try:
        yield
    finally:
        dist.destroy_process_group()


class ShardedTrainer(CandidateTrainer):
    """The candidate trainer over a process group of k ranks (initialised by the caller).
    Build it, give it its starting point (``inherit`` / ``resume``), call :meth:`shard`, then
    ``run`` on every rank."""

    def __init__(self, cfg: RunConfig, dataset: Any, **kwargs: Any):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if cfg.data.batch_size % self.world:
            raise ValueError(f"data.batch_size ({cfg.data.batch_size}) must divide over "
                             f"{self.world} shards")
        super().__init__(cfg, _Rows(dataset, self.rank, self.world), **kwargs)
        self._ask, self.control = self.control, self._agreed
        self.sharded = False

    def _agreed(self) -> str | None:
        """Rank 0's command (pause, kill or None), the same on every rank."""
        code = torch.tensor([COMMANDS.index(self._ask()) if self.rank == 0 else 0],
                            dtype=torch.int64, device=_wire())
        dist.broadcast(code, 0)
        return COMMANDS[int(code.item())]

    def _router_entropy(self) -> float | None:
        value = super()._router_entropy()  # each rank routes its own rows: their mean decides
        return None if value is None else _mean(value)

    def shard(self) -> None:
        """Shard the model as it stands; a resumed optimizer state moves to the shards (every
        rank loaded the same checkpoint, so every rank holds all of it until now)."""
        whole = StateDictOptions(full_state_dict=True)
        state = (get_optimizer_state_dict(self.model, self.optimizer, options=whole)
                 if self.step > 0 else None)
        shard(self.model)
        self.optimizer = build_optimizer(self.model, self.cfg.train, self.device.type)
        if state is not None:
            set_optimizer_state_dict(self.model, self.optimizer, state, options=whole)
        self.forward = self.model
        self.sharded = True

    def train_step(self, total_steps: int) -> tuple[float, float]:
        loss, norm = super().train_step(total_steps)
        return _mean(loss), norm  # the norm is already the whole model's

    def save(self, rung: int) -> str:
        """Gather the full state to rank 0, which writes the one checkpoint file."""
        assert self.checkpoint_path is not None
        weights = get_model_state_dict(self.model, options=FULL)
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=FULL)
        if self.rank == 0:
            whole = build_model(self.cfg.model, self.cfg.data.seq_len)
            whole.load_state_dict(weights)
            optimizer = build_optimizer(whole, self.cfg.train, "cpu")
            set_optimizer_state_dict(whole, optimizer, optim, options=FULL)
            dtype = torch.bfloat16 if self.cfg.train.checkpoint_dtype == "bfloat16" else None
            meta = {"step": self.step, "tokens": self.tokens, "rung": rung, "seed": self.seed,
                    "train_time": self.train_time, "guards": self.guards.state(),
                    "shards": self.world}
            ckpt.save(self.checkpoint_path, whole, optimizer, meta, dtype=dtype)
            self.callback({"kind": "checkpoint", "step": self.step,
                           "path": str(self.checkpoint_path)})
        dist.barrier()
        return str(self.checkpoint_path)


def train_rank(rank: int, world: int, cfg: RunConfig, dataset: Any, *, until_step: int,
               total_steps: int, rung: int = 1, seed: int | None = None,
               checkpoint_path: str | Path | None = None, resume_from: str | None = None,
               inherit: dict[str, torch.Tensor] | None = None,
               transforms: dict[str, dict[str, Any]] | None = None, device: str = "cpu",
               master: str = "127.0.0.1:29511", callback: Any = None,
               control: Any = None) -> TrainResult:
    """One rank of a sharded candidate: join the group, train, and leave it. Every rank returns
    the same result; rank 0 wrote the checkpoint. Rank 0's ``callback`` gets the events and
    its ``control`` decides for all."""
    with process_group(rank, world, device, master):
        trainer = ShardedTrainer(cfg, dataset, device=device, seed=seed,
                                 checkpoint_path=checkpoint_path,
                                 callback=callback if rank == 0 else None,
                                 control=control if rank == 0 else None)
        return start(trainer, resume_from, inherit, transforms).run(until_step, total_steps,
                                                                    rung)


def start(trainer: ShardedTrainer, resume_from: str | None = None,
          inherit: dict[str, torch.Tensor] | None = None,
          transforms: dict[str, dict[str, Any]] | None = None) -> ShardedTrainer:
    """Give the whole model its starting point (a checkpoint, else parents' tensors), then
    shard it."""
    if resume_from:
        trainer.resume(resume_from)
    elif inherit:
        trainer.inherit(inherit, transforms)
    trainer.shard()
    return trainer
