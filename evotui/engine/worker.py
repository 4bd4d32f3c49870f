"""The worker: a spawned process that trains candidates, one job (one candidate, one rung) at a
time, for as long as its executor keeps it.

``serve(jobs, events, flag, threads, target)`` is the process's entry point: it receives a
:class:`Job` at a time from ``jobs`` (the reading end of a ``Pipe``), calls
``target(job, events, flag, threads)`` (``run_job``; tests pass a wrapper) and waits for the
next; ``None`` or the pipe's end of file ends the process. torch stays imported and the last
prepared dataset stays in memory (keyed by the config's data section and the cache directory),
so a job after the first starts training at once.

``run_job(job, events, flag)`` runs :func:`execute`, the job-running function every executor
drives (a Ray actor calls it too), which prepares the tokens (from the cache), builds the trainer on
``job.device``, resumes a checkpoint or inherits parents' tensors, trains to ``job.until_step``
and sends ``(candidate_id, event)`` tuples to ``events`` (a multiprocessing ``Queue`` or the
writing end of a ``Pipe``); each event is one of :mod:`evotui.engine.events`:

* ``heartbeat`` every second from a background thread, from the first moment on;
* ``log`` (``text``): data preparation progress;
* the trainer's own events: ``step``, ``eval``, ``guard``, ``checkpoint``, ``done``;
* last, ``result``: ``TrainResult.as_dict()`` plus ``inherited`` and ``fresh`` tensor counts;
  or, when anything raised, ``error`` (``error``: one line, ``traceback``: text), after which the
  process exits with status 1.

``flag.value`` is written by the executor: 1 asks for a pause (checkpoint at the next step
boundary, result status ``paused``), 2 for a kill (result status ``killed``). The worker ignores
SIGINT, SIGHUP and SIGTERM (Ctrl-C, a lost terminal, ``timeout``, systemd and Slurm signal the
whole process group; the engine decides, and pauses the worker's candidate) and exits by
itself when its parent process is gone.

Between jobs the worker sends nothing (no heartbeat) and exits by itself when its parent is gone.
This module imports no torch at import time, so a spawned process starts its heartbeat before
the heavy imports, and the module imports fine on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from evotui.engine.events import Event, Log, Result
from evotui.engine.events import parse as parse_event
from evotui.engine.jobs import InheritSpec, Job, Warm
from evotui.errors import UserError

HEARTBEAT_INTERVAL = 1.0  # seconds
PAUSE, KILL = 1, 2
EXIT_ERROR, EXIT_ORPHANED = 1, 70

Send = Callable[[Event | dict[str, Any]], None]
STOP_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)


class Flag(Protocol):
    value: int


def serve(jobs: Connection, events: Any, flag: Flag, threads: int | None = None,
          target: Callable[..., None] | None = None) -> None:
    """The worker process's loop: run each job received on ``jobs`` with ``target`` (default
    ``run_job``) until ``None`` or end of file. The executor resets ``flag`` before each job."""
    if threading.current_thread() is threading.main_thread():
        _ignore_terminal_signals()
    target = target or run_job
    parent = os.getppid()
    while (job := _next_job(jobs, parent)) is not None:
        if isinstance(job, Warm):
            # a job may already wait for this worker: its heartbeat clock runs from the
            # moment it was given out
            beat = Heartbeat(_sender("", events), on_orphan=_orphaned)
            beat.start()
            try:
                warm_up(job, threads)
            finally:
                beat.stop()
            continue
        target(job, events, flag, threads)
        _release_memory()


def _ignore_terminal_signals() -> None:
    """Ctrl-C, a lost terminal and a supervisor's SIGTERM reach the whole process group; the
    engine decides what they mean (stop cleanly, pausing this worker's candidate), so the
    worker ignores them (the executor spawned it with them blocked, so none arrived before
    this)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))


def _next_job(jobs: Connection, parent: int) -> Job | Warm | None:
    """The next job; None when told to stop or when the executor's end of the pipe is closed.
    Exits the process when the parent is gone."""
    try:
        while not jobs.poll(HEARTBEAT_INTERVAL):
            if os.getppid() != parent:
                os._exit(EXIT_ORPHANED)
        return jobs.recv()
    except (EOFError, OSError):
        return None


def _release_memory() -> None:
    """Free the last job's tensors (reference cycles included) before the next job starts."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def run_job(job: Job, events: Any, flag: Flag, threads: int | None = None) -> None:
    """Train ``job`` in this process, reporting to ``events``; see the module docstring."""
    if threading.current_thread() is threading.main_thread():
        _ignore_terminal_signals()
    send = _sender(job.candidate_id, events)
    final = execute(job, send, flag, threads, on_orphan=lambda: os._exit(EXIT_ORPHANED))
    send(final)
    if final["kind"] == "error":
        raise SystemExit(EXIT_ERROR)


def execute(job: Job, send: Send, flag: Flag, threads: int | None = None,
            on_orphan: Callable[[], None] | None = None) -> dict[str, Any]:
    """The job-running function every executor drives (a local worker process, a Ray actor):
    heartbeats through ``send`` from the first moment, :func:`train`, and the terminal event
    returned, not sent: ``result``, or ``error`` (one line and the traceback) when anything
    raised. ``on_orphan`` is called when the events channel broke (nobody is listening)."""
    beat = Heartbeat(send, on_orphan=on_orphan)
    beat.start()
    try:
        result = train(job, send, flag, threads)
    except Exception as e:
        beat.stop()
        if _parent_gone(e) and on_orphan is not None:
            on_orphan()
        return {"kind": "error", "error": one_line(e), "traceback": traceback.format_exc()}
    beat.stop()
    return result


def _orphaned() -> None:
    os._exit(EXIT_ORPHANED)


def _parent_gone(error: BaseException) -> bool:
    """The events pipe broke: nobody is listening, so there is nobody to tell."""
    return isinstance(error, BrokenPipeError)


def train(job: Job, send: Send, flag: Flag, threads: int | None = None) -> Result:
    """Everything between start-up and the result event; raises on any error. The result's
    ``timings`` say where the job's wall time went (``evotui bench engine`` adds them up).
    A job of ``shards`` > 1 trains sharded: this process as rank 0 of ranks it spawns
    (:func:`evotui.engine.sharded.train_sharded`), or, with ``master``, as ``job.rank`` of a
    group its executor started (the Ray executor: one rank per actor)."""
    clock, received_at = _Clock(), time.monotonic()
    from evotui.dsl import RunConfig, parse

    cfg = parse(job.config, RunConfig, source=f"candidate {job.candidate_id}")  # before torch
    _setup(job.device, threads)
    clock.lap("startup_s")
    dataset = prepared(job.config.get("data"), job.cache_dir, cfg, send)
    clock.lap("data_s")
    if job.shards > 1 and job.master:  # one rank; the executor started the others
        from evotui.engine.sharded import rank_job

        trainer, result = rank_job(job.rank, job, cfg, dataset, job.master,
                                   callback=send if job.rank == 0 else None,
                                   control=lambda: command(flag))
        clock.lap("train_total_s")
        return _result(result, trainer, clock, received_at)
    if job.shards > 1:
        from evotui.engine.sharded import train_sharded

        trainer, result = train_sharded(job, cfg, dataset, send, lambda: command(flag),
                                        threads, fail=lambda reason: _fail(send, reason))
        clock.lap("train_total_s")
        return _result(result, trainer, clock, received_at)
    from evotui.train.trainer import CandidateTrainer

    trainer = CandidateTrainer(cfg, dataset, device=job.device, seed=job.seed,
                               checkpoint_path=job.checkpoint_path, callback=send,
                               control=lambda: command(flag))
    clock.lap("build_s")
    if job.resume_from:
        trainer.resume(job.resume_from)
    elif job.inherit:
        trainer.inherit(inherited_state(job.inherit), job.transforms)
    clock.lap("load_s")
    result = trainer.run(job.until_step, job.total_steps, job.rung)
    return _result(result, trainer, clock, received_at)


def _result(result: Any, trainer: Any, clock: _Clock, received_at: float) -> Result:
    timings = {**clock.laps, "train_s": result.train_seconds, **result.timings}
    return parse_event({"kind": "result", **result.as_dict(),  # type: ignore[return-value]
                        "timings": timings, "received_at": received_at,
                        "inherited": trainer.inherited, "fresh": trainer.fresh,
                        "transformed": trainer.transformed})


def _fail(send: Send, reason: str) -> None:
    """End this worker with ``reason`` (from a thread: the main one may be stuck in a
    collective with a dead rank)."""
    with contextlib.suppress(BrokenPipeError, EOFError, OSError):
        send({"kind": "error", "error": reason, "traceback": None})
    os._exit(EXIT_ERROR)


class _Clock:
    """Wall time between consecutive ``lap(name)`` calls."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now


def _setup(device: str, threads: int | None) -> None:
    """Import torch and the trainer (once per process) and pin this process to its device."""
    import torch

    import evotui.train.trainer  # noqa: F401 - the import is what takes time

    if threads:
        torch.set_num_threads(threads)
    if torch.device(device).type == "cuda":  # stray allocations land on this slot's GPU
        torch.cuda.set_device(torch.device(device))


def warm_up(warm: Warm, threads: int | None = None) -> None:
    """Before the first job: import torch and the trainer and prepare the run's dataset, so the
    slot's first candidate starts training at once. Failures are left for the job to report."""
    from evotui.dsl import RunConfig, parse

    try:
        cfg = parse(warm.config, RunConfig, source="warm-up")
        _setup(warm.device, threads)
        prepared(warm.config.get("data"), warm.cache_dir, cfg, lambda event: None)
    except Exception:  # noqa: BLE001 - the first job prepares again and reports the error
        _DATASETS.clear()


_DATASETS: dict[str, Any] = {}  # the last prepared dataset in this process, by its key


def prepared(data: Any, cache_dir: str | None, cfg: Any, send: Send) -> Any:
    """The dataset for a config's ``data`` section: the one this process prepared before (for
    an earlier job or the warm-up) when the section and the cache directory are the same (the
    model's vocabulary is checked again), else a freshly prepared one, which replaces it."""
    from evotui.data import check_vocab, prepare

    key = json.dumps([data, cache_dir], sort_keys=True, default=str)
    dataset = _DATASETS.get(key)
    if dataset is not None:
        check_vocab(dataset.tokenizer, cfg.model.emb.vocab)
        send(Log("data: reusing the dataset this worker prepared"))
        return dataset
    _DATASETS.clear()
    cache_dir = Path(cache_dir) if cache_dir else None
    dataset = prepare(cfg, cache_dir, progress=lambda text: send(Log(text)))
    _DATASETS[key] = dataset
    return dataset


def command(flag: Flag) -> str | None:
    """The executor's request, as the trainer's ``control()`` answers it."""
    value = flag.value
    return "kill" if value == KILL else "pause" if value == PAUSE else None


def inherited_state(specs: list[InheritSpec]) -> dict[str, Any]:
    """{child tensor name: parent tensor}, reading each parent checkpoint once. A name the
    parent lacks is skipped (the child's tensor keeps its fresh init)."""
    from evotui.train.checkpoint import load_state

    by_path: dict[str, list[tuple[str, str]]] = {}
    for child, path, name in specs:
        by_path.setdefault(path, []).append((child, name))
    state: dict[str, Any] = {}
    for path, pairs in by_path.items():
        parent = load_state(path)
        state.update({child: parent[name] for child, name in pairs if name in parent})
    return state


def one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = "; ".join(lines)
    if isinstance(error, UserError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _sender(candidate_id: str, events: Any) -> Send:
    """A thread-safe ``send(event)`` onto a Queue (``put``) or a Connection (``send``); a plain
    ``{"kind": ...}`` dict (the trainer's) goes out as its typed event."""
    put = events.send if hasattr(events, "send") else events.put
    lock = threading.Lock()

    def send(event: Event | dict[str, Any]) -> None:
        event = parse_event(event)
        with lock:
            put((candidate_id, event))

    return send


class Heartbeat:
    """A daemon thread that sends ``{"kind": "heartbeat"}`` every ``interval`` seconds and
    ends the process when its parent is gone (nobody would read its events); ``on_orphan``
    replaces that ending (None: a Ray actor's parent is Ray's, and Ray ends it)."""

    def __init__(self, send: Send, interval: float = HEARTBEAT_INTERVAL,
                 on_orphan: Callable[[], None] | None = None):
        self.send, self.interval = send, interval
        self.on_orphan = on_orphan
        self.parent = os.getppid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="evotui-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        orphaned = self.on_orphan or (lambda: None)
        while True:
            if os.getppid() != self.parent:
                orphaned()
            try:
                self.send({"kind": "heartbeat"})
            except (BrokenPipeError, EOFError, OSError):
                orphaned()
            if self._stop.wait(self.interval):
                return
