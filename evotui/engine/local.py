"""The local executor: one spawned worker process per device slot at a time, on this machine.

Each worker gets its own pipe for events (so a worker killed mid-message corrupts nothing but
its own channel, and the pipe's end of file says that everything it sent has been read) and a
shared byte for commands (1 pause, 2 kill). One monitor thread reads the pipes, hands events to
asyncio, watches heartbeats, escalates kills and reaps exited processes; the event loop never
blocks on a worker.

When a worker has exited and its pipe is drained, its slot is free and its one terminal event
goes out: the worker's ``result``; or ``failed`` with the worker's error message, ``killed``,
``no heartbeat for N s`` or ``worker exited with code N`` (a crash, a signal, the OOM killer).
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from evotui.engine.executor import Event, Executor, check_action
from evotui.engine.jobs import Job
from evotui.engine.worker import KILL, PAUSE, run_job

Target = Callable[..., None]
LINGER = 1.0  # seconds to wait for a dead worker's pipe to close (a forked grandchild may hold it)
POLL = 0.2  # seconds between checks on heartbeats, deadlines and exits


def device_slots(devices: str | Sequence[str | int] | None = None, cpu_slots: int = 1) -> list[str]:
    """The slots: the given devices (``"0,1"`` -> cuda:0, cuda:1; ``"cpu"`` stays), else every
    visible GPU, else ``cpu_slots`` CPU slots."""
    if devices:
        items = devices.split(",") if isinstance(devices, str) else list(devices)
        return [_device(item) for item in items]
    import torch

    count = torch.cuda.device_count()
    if count:
        return [f"cuda:{i}" for i in range(count)]
    return ["cpu"] * max(1, cpu_slots)


def _device(item: str | int) -> str:
    text = str(item).strip()
    if text.isdigit():
        return f"cuda:{text}"
    if text == "cuda":
        return "cuda:0"
    if text == "cpu" or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise ValueError(f"unknown device {item!r}; use a GPU index (0), cuda:N or cpu")


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class _Worker:
    job: Job
    process: BaseProcess
    reader: Connection
    flag: Any  # a shared ctypes byte
    last_seen: float
    result: Event | None = None  # held back until the process has exited
    error: Event | None = None
    cause: str | None = None  # why the executor ended it, if it did
    deadline: float | None = None  # when to escalate (terminate, then kill)
    terminated: bool = False
    eof: bool = False
    exited_at: float | None = None


class LocalExecutor(Executor):
    def __init__(self, devices: str | Sequence[str | int] | None = None, *, cpu_slots: int = 1,
                 cpu_threads: int | None = None, heartbeat_timeout: float = 60.0,
                 grace: float = 5.0, target: Target = run_job):
        """``devices``/``cpu_slots``: see :func:`device_slots`. ``cpu_threads``: torch threads
        per CPU worker (default: this machine's cores shared among the CPU slots).
        ``heartbeat_timeout``: seconds of silence before a worker is killed. ``grace``: seconds
        between a kill request and SIGTERM, and between SIGTERM and SIGKILL. ``target``: the
        worker entry point, ``run_job``; tests pass a wrapper."""
        super().__init__(device_slots(devices, cpu_slots))
        self.cpu_threads = cpu_threads
        self.heartbeat_timeout, self.grace, self.target = heartbeat_timeout, grace, target
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._thread: threading.Thread | None = None
        self._closing = False
        _LIVE.add(self)

    # -- the engine's interface ---------------------------------------------------------
    def busy_slots(self) -> list[str]:
        with self._lock:
            return [w.job.device for w in self._workers.values()]

    def running(self) -> list[str]:
        with self._lock:
            return list(self._workers)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closing:
                raise RuntimeError("the executor is shut down")
            if job.candidate_id in self._workers:
                raise ValueError(f"candidate {job.candidate_id} is already running")
            busy = [w.job.device for w in self._workers.values()].count(job.device)
            if busy >= self.slots.count(job.device):
                raise ValueError(f"no free slot on {job.device!r} (slots: {self.slots})")
            reader, writer = self._ctx.Pipe(duplex=False)
            flag = self._ctx.Value("b", 0, lock=False)  # one byte: no lock a kill could orphan
            process = self._ctx.Process(
                target=self.target, args=(job, writer, flag),
                kwargs={"threads": self._threads(job.device)},
                name=f"evotui-worker-{job.candidate_id}")
            try:
                process.start()
            except BaseException:
                reader.close()
                raise
            finally:
                writer.close()  # the child holds its own copy; its end of file is the worker's
            self._workers[job.candidate_id] = _Worker(job, process, reader, flag,
                                                      time.monotonic())
            # under the lock: the monitor cannot pass on this worker's events before this one
            self._emit(job.candidate_id, {"kind": "started", "device": job.device,
                                          "pid": process.pid})
            if self._thread is None:
                self._thread = threading.Thread(target=self._monitor, name="evotui-executor",
                                                daemon=True)
                self._thread.start()

    def request(self, candidate_id: str, action: str) -> bool:
        check_action(action)
        with self._lock:
            w = self._workers.get(candidate_id)
            if w is None or w.exited_at is not None:
                return False
            if action == "pause":
                if w.flag.value == 0:
                    w.flag.value = PAUSE
            else:
                w.flag.value = KILL
                w.cause = w.cause or "killed"
                if w.deadline is None or w.deadline > time.monotonic() + self.grace:
                    w.deadline = time.monotonic() + self.grace
        return True

    async def shutdown(self, kill: bool = False) -> None:
        with self._lock:
            self._closing = True
            ids = list(self._workers)
        if kill:
            for candidate_id in ids:
                self.request(candidate_id, "kill")
        thread = self._thread
        while thread is not None and thread.is_alive():
            await asyncio.sleep(0.05)
        self._end()
        _LIVE.discard(self)

    # -- the monitor thread -------------------------------------------------------------
    def _threads(self, device: str) -> int | None:
        if device != "cpu":
            return None
        if self.cpu_threads is not None:
            return self.cpu_threads
        return max(1, cpu_cores() // max(1, self.slots.count("cpu")))

    def _monitor(self) -> None:
        while True:
            with self._lock:
                if self._closing and not self._workers:
                    return
                readers = {w.reader: cid for cid, w in self._workers.items() if not w.eof}
            if readers:
                for reader in wait(list(readers), timeout=POLL):
                    self._read(readers[reader])
            else:
                time.sleep(POLL)
            self._check(time.monotonic())

    def _read(self, candidate_id: str) -> None:
        w = self._workers[candidate_id]  # only this thread removes workers
        try:
            while True:
                _, event = w.reader.recv()
                self._handle(candidate_id, w, event)
                if not w.reader.poll():
                    return
        except (EOFError, OSError):
            w.eof = True  # everything the worker sent has been read
            w.process.join(0.05)  # usually exiting right now; _check reaps it otherwise

    def _handle(self, candidate_id: str, w: _Worker, event: Event) -> None:
        w.last_seen = time.monotonic()
        kind = event.get("kind")
        if kind == "heartbeat":
            return
        if kind in ("result", "error"):
            with self._lock:  # the work is over; a worker that lingers is ended
                w.result, w.error = (event, None) if kind == "result" else (None, event)
                if w.deadline is None:
                    w.deadline = time.monotonic() + self.grace
            return
        self._emit(candidate_id, event)

    def _check(self, now: float) -> None:
        done = []
        with self._lock:
            for candidate_id, w in self._workers.items():
                if w.process.exitcode is not None:
                    w.exited_at = w.exited_at or now
                    if w.eof or now - w.exited_at > LINGER:
                        done.append(candidate_id)
                elif w.cause is None and now - w.last_seen > self.heartbeat_timeout:
                    w.cause = f"no heartbeat for {self.heartbeat_timeout:g} s"
                    w.process.kill()  # silent: stopped, hung or wedged; SIGTERM may not land
                    w.terminated, w.deadline = True, None
                elif w.deadline is not None and now >= w.deadline:
                    if not w.terminated:
                        w.process.terminate()
                        w.terminated, w.deadline = True, now + self.grace
                    else:
                        w.process.kill()
                        w.deadline = None
            finished = [(cid, self._workers.pop(cid)) for cid in done]
        for candidate_id, w in finished:  # the slot is free before the terminal event goes out
            w.reader.close()
            self._emit(candidate_id, outcome(w))

    def _kill_now(self) -> None:
        """At interpreter exit: no worker outlives the engine."""
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            if w.process.exitcode is None:
                w.process.kill()
        for w in workers:
            w.process.join(1.0)


def outcome(w: _Worker) -> Event:
    """The terminal event of a worker that has exited and been read to the end."""
    code = w.process.exitcode
    if w.result is not None:
        return w.result
    if w.error is not None:
        return {"kind": "failed", "reason": w.error.get("error", "error"),
                "traceback": w.error.get("traceback"), "exitcode": code}
    if w.cause is not None:
        return {"kind": "failed", "reason": w.cause, "exitcode": code}
    return {"kind": "failed", "reason": f"worker exited with code {code}{_signal(code)}",
            "exitcode": code}


def _signal(code: int | None) -> str:
    if code is None or code >= 0:
        return ""
    try:
        return f" ({signal.Signals(-code).name})"
    except ValueError:
        return ""


_LIVE: weakref.WeakSet[LocalExecutor] = weakref.WeakSet()


@atexit.register
def _reap_all() -> None:
    for executor in list(_LIVE):
        executor._kill_now()
