"""A job: everything a worker process needs to train one candidate for one rung.

Plain data only (strings, numbers, lists, dicts), so a job pickles into a spawned process and
could equally be sent to another machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (child tensor name, parent checkpoint path, parent tensor name)
InheritSpec = tuple[str, str, str]


@dataclass
class Job:
    candidate_id: str
    config: dict[str, Any]  # the RunConfig as plain data (evotui.dsl.to_data), candidate's model
    until_step: int  # train until this cumulative step
    total_steps: int  # the step count the learning-rate schedule spans
    rung: int
    seed: int
    checkpoint_path: str  # where the worker writes the candidate's checkpoint
    resume_from: str | None = None  # a checkpoint to continue (weights, optimizer, step)
    inherit: list[InheritSpec] | None = None  # tensors copied from parents' checkpoints
    transforms: dict[str, dict[str, Any]] | None = None  # net2net plan (evolve.net2net_plan)
    device: str = "cpu"  # "cpu", "cuda:0", ...
    cache_dir: str | None = None  # the token cache (None: the default cache)
    # FSDP: the executor sets these when the candidate trains sharded (evotui.dsl.memory.shards)
    shards: int = 1  # ranks; rank 0 runs on ``device``
    devices: list[str] | None = None  # every rank's device, ``device`` first
    rank: int = 0  # with ``master``: this job is one rank of a group an executor started
    master: str | None = None  # HOST:PORT of rank 0 (None: the worker starts the other ranks)

    def __post_init__(self) -> None:
        if self.inherit is not None:  # tuples survive any round trip through lists
            self.inherit = [(str(c), str(p), str(n)) for c, p, n in self.inherit]


@dataclass
class Warm:
    """Sent to a fresh worker before its first job: import torch and the trainer, and prepare
    the dataset of ``config`` (plain data, as in a Job) from ``cache_dir``."""

    config: dict[str, Any]
    device: str = "cpu"
    cache_dir: str | None = None


def job_shards(job: Job, capacity: int | None) -> tuple[int, bool]:
    """(the FSDP ranks ``job`` trains on where a slot holds ``capacity`` bytes, None where that
    is unknown: see :func:`evotui.dsl.memory.shards`; whether its config asks for them by
    number). Every executor decides by this one rule."""
    from evotui.dsl import RunConfig, parse
    from evotui.dsl.memory import shards

    try:
        cfg = parse(job.config, RunConfig, source=f"candidate {job.candidate_id}")
    except Exception:  # noqa: BLE001 - the worker reports a bad config as the job's error
        return 1, False
    return shards(cfg, capacity), cfg.train.parallel == "fsdp"
