"""A job that trains sharded: rank 0 in the worker that took the job, ranks 1..k-1 in helper
processes it spawns, one per extra slot the executor reserved (``job.devices``).

Every rank prepares the dataset from the token cache (rank 0 prepared it first, so the helpers
read it), builds the whole model, takes the job's starting point (resume checkpoint, else the
parents' tensors) and shards it (:mod:`evotui.train.fsdp`). Rank 0 sends the job's events and
answers the executor's pause and kill for all ranks; the checkpoint is the one file rank 0 writes.

Faults: a helper that exits with an error (or is killed) ends rank 0 with an ``error`` naming the
rank, so the executor fails the job as it fails any worker that raised; a helper whose parent
(the worker) is gone exits at once, so a killed worker leaves no rank behind.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from evotui.engine.jobs import Job

ORPHAN_POLL = 0.5  # seconds between a helper's checks on its parent, and rank 0's on helpers
EXIT_ORPHANED = 70


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_job(rank: int, job: Job, cfg: Any, dataset: Any, master: str,
             callback: Any = None, control: Any = None) -> tuple[Any, Any]:
    """One rank of ``job``: (its trainer, its result)."""
    from evotui.engine.worker import inherited_state
    from evotui.train import fsdp

    devices = job.devices or [job.device] * job.shards
    with fsdp.process_group(rank, job.shards, devices[rank], master):
        trainer = fsdp.ShardedTrainer(cfg, dataset, device=devices[rank], seed=job.seed,
                                      checkpoint_path=job.checkpoint_path, callback=callback,
                                      control=control)
        inherit = inherited_state(job.inherit) if job.inherit and not job.resume_from else None
        fsdp.start(trainer, job.resume_from, inherit, job.transforms)
        return trainer, trainer.run(job.until_step, job.total_steps, job.rung)


def train_sharded(job: Job, cfg: Any, dataset: Any, send: Callable[[Any], None],
                  control: Callable[[], str | None], threads: int | None,
                  fail: Callable[[str], None]) -> tuple[Any, Any]:
    """Rank 0 here, ranks 1..k-1 in spawned helpers; (rank 0's trainer, the result).
    ``fail(reason)`` ends this process when a helper dies (it does not return)."""
    master = f"127.0.0.1:{free_port()}"
    ctx = multiprocessing.get_context("spawn")
    helpers = [ctx.Process(target=helper, args=(job, rank, master, threads, os.getpid()),
                           name=f"evotui-rank-{rank}-{job.candidate_id}", daemon=True)
               for rank in range(1, job.shards)]
    for p in helpers:
        p.start()
    send({"kind": "log", "text": f"fsdp: training on {job.shards} ranks "
          f"({', '.join(job.devices or [job.device] * job.shards)})"})
    done = threading.Event()
    watch = threading.Thread(target=_watch, args=(helpers, done, fail), daemon=True,
                             name="evotui-ranks")
    watch.start()
    try:
        result = rank_job(0, job, cfg, dataset, master, callback=send, control=control)
        done.set()
        for p in helpers:
            p.join(60)
        return result
    finally:
        done.set()
        for p in helpers:
            if p.exitcode is None:
                p.kill()
                p.join(5)


def _watch(helpers: list[Any], done: threading.Event,
           fail: Callable[[str], None]) -> None:
    """Rank 0's watch on its helpers: one that ended with an error ends the job."""
    while not done.wait(ORPHAN_POLL):
        for rank, p in enumerate(helpers, start=1):
            code = p.exitcode
            if code is not None and code != 0 and not done.is_set():
                how = f"signal {-code}" if code < 0 else f"code {code}"
                with contextlib.suppress(ValueError):
                    how = signal.Signals(-code).name if code < 0 else how
                fail(f"FSDP rank {rank} of {len(helpers) + 1} exited with {how}")
                return


def helper(job: Job, rank: int, master: str, threads: int | None, parent: int) -> None:
    """A helper rank's process: train ``job`` as ``rank``; exit with status 1 on any error,
    and at once when the worker that spawned it is gone."""
    from evotui.engine import worker

    worker._ignore_terminal_signals()
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    try:
        from evotui.dsl import RunConfig, parse

        cfg = parse(job.config, RunConfig, source=f"candidate {job.candidate_id}")
        devices = job.devices or [job.device] * job.shards
        worker._setup(devices[rank], threads)
        dataset = worker.prepared(job.config.get("data"), job.cache_dir, cfg, lambda e: None)
        rank_job(rank, job, cfg, dataset, master)
    except BaseException:  # noqa: BLE001 - rank 0 reports it; the traceback goes to stderr
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)


def _orphan_watch(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(EXIT_ORPHANED)
        time.sleep(ORPHAN_POLL)
