"""The local executor: one long-lived spawned worker process per device slot, on this machine.

A slot's worker serves one job after another (:func:`evotui.engine.worker.serve`): it keeps torch
imported and the prepared dataset in memory, so only a slot's first job pays for start-up. A
job goes to the slot's idle worker if there is one, else to a newly spawned one. ``target`` (a
test hook) is the per-job function the worker calls, ``run_job`` by default.

Each worker gets its own pipe for jobs, its own pipe for events (so a worker killed mid-message
corrupts nothing but its own channel, and the pipe's end of file says that everything it sent
has been read) and a shared byte for commands (1 pause, 2 kill). One monitor thread reads the
pipes, hands events to asyncio, watches heartbeats, escalates kills and reaps exited processes;
the event loop never blocks on a worker.

A job's one terminal event goes out once its slot is free: its ``result`` as soon as it arrives
(the worker lives on and takes the next job), unless the job was being killed, in which case the
result waits until the worker has exited; or, once the worker has exited and its pipe is
drained, ``failed`` with the worker's error message, ``killed``, ``no heartbeat for N s`` or
``worker exited with code N`` (a crash, a signal, the OOM killer; ``signal`` names it). The next
job on that slot spawns a new worker. Heartbeats are watched only while a worker runs a job.

A candidate that trains sharded (``train.parallel``, :func:`evotui.dsl.memory.shards`: k FSDP
ranks) takes k slots at once: CPU slots, or k different GPUs. It waits, holding the slot the
engine gave it, until k are free; slots that free up go to the oldest waiting candidate first
(and it may take them from a younger one still waiting, so none waits forever), and are never
free to the engine meanwhile, so no more ranks run than there are slots. Its worker runs rank 0
and spawns the others (:mod:`evotui.engine.sharded`); events, heartbeats and failures are the
worker's as for any job. A candidate asking for more slots than the executor has fails at once
with a reason that says so (``auto`` trains it unsharded instead, as without FSDP). A pause
asked while it waits applies when it starts; a kill ends it at once.

Workers ignore SIGINT, SIGHUP and SIGTERM (a terminal, ``timeout``, systemd or Slurm signal the
whole process group; the engine alone decides what that means), so the executor ends a worker
that does not obey a kill with SIGKILL once the grace period has passed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing
import os
import signal
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any

from evotui.engine.devices import ranks, slot_name, slots
from evotui.engine.events import Event, Failed, Log, Result, Started, WorkerError, parse
from evotui.engine.executor import Executor, check_action
from evotui.engine.jobs import Job, Warm, job_shards
from evotui.engine.worker import KILL, PAUSE, run_job, serve

Target = Callable[..., None]
TERMINAL_SIGNALS = {signal.SIGINT, signal.SIGHUP, signal.SIGTERM}
LINGER = 1.0  # seconds to wait for a dead worker's pipe to close (a forked grandchild may hold it)
POLL = 0.2  # seconds between checks on heartbeats, deadlines and exits


def device_slots(devices: str | Sequence[str | int] | None = None, cpu_slots: int = 1) -> list[str]:
    """The slots: the given devices (``"0,1"`` -> cuda:0, cuda:1; ``"cpu"`` stays; see
    :func:`evotui.engine.devices.slot_name`), else :func:`evotui.engine.devices.slots` for
    ``auto`` (every visible GPU, else ``cpu_slots`` CPU slots)."""
    if devices:
        items = devices.split(",") if isinstance(devices, str) else list(devices)
        return [slot_name(item) for item in items]
    return slots("auto", None, cpu_slots)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class _Worker:
    device: str
    process: BaseProcess
    reader: Connection  # its events
    jobs: Connection  # its jobs (None: stop)
    flag: Any  # a shared ctypes byte
    last_seen: float
    job: Job | None = None  # the job it runs; None: idle
    extra: list[str] = field(default_factory=list)  # the other slots its sharded job holds
    result: Result | None = None  # held back until the process has exited (a killed job)
    error: WorkerError | None = None
    cause: str | None = None  # why the executor ended it, if it did
    deadline: float | None = None  # when to end it with SIGKILL
    terminated: bool = False  # SIGKILL sent
    stopping: bool = False  # asked to exit
    eof: bool = False
    exited_at: float | None = None

    def assign(self, job: Job | None, now: float, extra: Sequence[str] = ()) -> None:
        """Start ``job`` on this worker (None: it is idle again), with a clean slate."""
        self.job, self.last_seen, self.extra = job, now, list(extra)
        self.result = self.error = self.cause = self.deadline = None
        self.terminated = False

    def stop(self) -> None:
        """Ask the worker to exit once it is idle (it reads this after any job it runs)."""
        if not self.stopping:
            self.stopping = True
            with contextlib.suppress(OSError, ValueError):  # exited already, or closed
                self.jobs.send(None)


@dataclass
class _Waiting:
    """A sharded job waiting for its slots: the ones it holds so far."""

    job: Job
    held: list[str]
    paused: bool = False  # a pause asked while it waits: it pauses when it starts


def kind(device: str) -> str:
    return "cpu" if device == "cpu" else "cuda"


class LocalExecutor(Executor):
    def __init__(self, devices: str | Sequence[str | int] | None = None, *, cpu_slots: int = 1,
                 cpu_threads: int | None = None, heartbeat_timeout: float = 60.0,
                 grace: float = 5.0, target: Target = run_job):
        """``devices``/``cpu_slots``: see :func:`device_slots`. ``cpu_threads``: torch threads
        per CPU worker (default: this machine's cores shared among the CPU slots).
        ``heartbeat_timeout``: seconds of silence before a worker running a job is killed.
        ``grace``: seconds between a kill request (or an idle worker told to exit) and SIGKILL.
        ``target``: the function a worker calls for each job, ``run_job``; tests pass a
        wrapper (importable by name: it is pickled into the spawned process)."""
        super().__init__(device_slots(devices, cpu_slots))
        self.cpu_threads = cpu_threads
        self.heartbeat_timeout, self.grace, self.target = heartbeat_timeout, grace, target
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []  # every live worker process, busy or idle
        self._waiting: list[_Waiting] = []  # sharded jobs waiting for slots, oldest first
        self._spawned = 0
        self._thread: threading.Thread | None = None
        self._closing = False
        _LIVE.add(self)

    # -- the engine's interface ---------------------------------------------------------
    def busy_slots(self) -> list[str]:
        """Every slot a job holds: a running job's (all of a sharded job's), a waiting one's."""
        with self._lock:
            return self._held()

    def running(self) -> list[str]:
        with self._lock:
            return ([w.job.candidate_id for w in self._workers if w.job is not None]
                    + [x.job.candidate_id for x in self._waiting])

    def submit(self, job: Job) -> None:
        ForkingPickler.dumps(job)  # a job that cannot be sent changes nothing
        shards, explicit = self._shards(job)
        with self._lock:
            if self._closing:
                raise RuntimeError("the executor is shut down")
            if job.candidate_id in ([w.job.candidate_id for w in self._workers if w.job]
                                    + [x.job.candidate_id for x in self._waiting]):
                raise ValueError(f"candidate {job.candidate_id} is already running")
            if self._free()[job.device] <= 0:
                raise ValueError(f"no free slot on {job.device!r} (slots: {self.slots})")
            have = self._capacity(job.device)
            if shards > have and not explicit:
                shards = 1  # auto: trained unsharded, as it would be without FSDP
            if shards > have:
                kinds = "CPU slots" if kind(job.device) == "cpu" else "GPUs"
                self._emit(job.candidate_id, Failed(
                    f"train.shards {shards} needs {shards} {kinds} of one node; this executor "
                    f"has {have} (give more with --devices or --cpu-slots, or lower "
                    "train.shards)"))
                return
            if shards == 1:
                sends = [self._launch(job, [job.device])]
            else:
                self._waiting.append(_Waiting(replace(job, shards=shards), [job.device]))
                sends = self._grant()
                if any(x.job.candidate_id == job.candidate_id for x in self._waiting):
                    self._emit(job.candidate_id, Log(
                        f"fsdp: waiting for {shards} {kind(job.device)} slots at once"))
        # outside the lock: a stopped worker with a full pipe must not block the monitor. If
        # the worker has died, the monitor reports the job as failed.
        _deliver(sends)

    def warm(self, config: dict[str, Any], cache_dir: str | None = None) -> None:
        """Spawn a worker for every slot that has none and have it import torch and prepare
        the run's dataset now, while the engine breeds, so no candidate waits for that."""
        with self._lock:
            if self._closing:
                return
            have = [w.device for w in self._workers if not w.stopping and not w.eof]
            wanted = Counter(self.slots)
            wanted.subtract(Counter(have))
            for device, missing in wanted.items():
                for _ in range(max(0, missing)):
                    w = self._spawn(device)
                    with contextlib.suppress(OSError):
                        w.jobs.send(Warm(config, device, cache_dir))
            self._start_monitor()

    def _start_monitor(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._monitor, name="evotui-executor",
                                            daemon=True)
            self._thread.start()

    def request(self, candidate_id: str, action: str) -> bool:
        check_action(action)
        with self._lock:
            waiting = next((x for x in self._waiting if x.job.candidate_id == candidate_id), None)
            if waiting is not None:
                if action == "pause":
                    waiting.paused = True
                    return True
                self._waiting.remove(waiting)  # its slots free before its terminal event
                sends = self._grant()
        if waiting is not None:
            self._emit(candidate_id, Failed("killed"))
            _deliver(sends)
            return True
        with self._lock:
            w = self._running(candidate_id)
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
        """Wait for the running jobs (killing them first with ``kill``); idle workers are told
        to exit, and are terminated if they have not within the grace period."""
        with self._lock:
            self._closing = True
            ids = [w.job.candidate_id for w in self._workers if w.job is not None]
            waiting, self._waiting = self._waiting, []
        for x in waiting:
            self._emit(x.job.candidate_id, Failed("killed" if kill else (
                f"the executor shut down before {x.job.shards} slots were free")))
        if kill:
            for candidate_id in ids:
                self.request(candidate_id, "kill")
        thread = self._thread
        while thread is not None and thread.is_alive():
            await asyncio.sleep(0.05)
        self._end()
        _LIVE.discard(self)

    # -- slots --------------------------------------------------------------------------
    def _held(self) -> list[str]:
        held = []
        for w in self._workers:
            if w.job is not None:
                held += [w.device, *w.extra]
        for x in self._waiting:
            held += x.held
        return held

    def _free(self) -> Counter[str]:
        free = Counter(self.slots)
        free.subtract(Counter(self._held()))
        return free

    def _capacity(self, device: str) -> int:
        """How many ranks one job on ``device`` can have: the CPU slots, or the GPUs."""
        return ranks(self.slots, device)

    def _shards(self, job: Job) -> tuple[int, bool]:
        """(the FSDP ranks ``job`` trains on, whether its config asks for them by number)."""
        return job_shards(job, slot_memory(job.device))

    def _grant(self) -> list[tuple[_Worker, bytes]]:
        """Give free slots to waiting sharded jobs, oldest first; start those that have all
        theirs. Under the lock; returns what to send to whom once it is released."""
        sends = []
        for x in list(self._waiting):
            if x not in self._waiting:
                continue
            need = x.job.shards - len(x.held)
            free = self._free()
            pool = [s for s in dict.fromkeys(self.slots) if kind(s) == kind(x.job.device)
                    for _ in range(max(0, free[s]))]
            for younger in self._waiting[self._waiting.index(x) + 1:]:
                pool += [s for s in younger.held if kind(s) == kind(x.job.device)]
            for slot in pool:
                if need == 0:
                    break
                if kind(slot) == "cuda" and slot in x.held:
                    continue  # k ranks on k different GPUs
                for younger in self._waiting[self._waiting.index(x) + 1:]:
                    if free[slot] <= 0 and slot in younger.held:
                        younger.held.remove(slot)  # taken from a younger waiting job
                        break
                free[slot] -= 1
                x.held.append(slot)
                need -= 1
            if need == 0:
                self._waiting.remove(x)
                w, data = self._launch(x.job, x.held)
                if x.paused:
                    w.flag.value = PAUSE
                sends.append((w, data))
        return sends

    def _launch(self, job: Job, devices: list[str]) -> tuple[_Worker, bytes]:
        """Start ``job`` on the slots ``devices`` (rank 0's first); under the lock."""
        if len(devices) > 1:
            job = replace(job, device=devices[0], shards=len(devices), devices=list(devices))
        data = bytes(ForkingPickler.dumps(job))
        w = self._idle(job.device) or self._spawn(job.device)
        w.flag.value = 0  # no pause or kill left over from the previous job
        w.assign(job, time.monotonic(), devices[1:])
        # under the lock, before the job is sent: the monitor cannot pass on this job's
        # events before this one
        self._emit(job.candidate_id, Started(job.device, w.process.pid))
        self._start_monitor()
        return w, data

    # -- workers ------------------------------------------------------------------------
    def _running(self, candidate_id: str) -> _Worker | None:
        for w in self._workers:
            if w.job is not None and w.job.candidate_id == candidate_id:
                return w
        return None

    def _idle(self, device: str) -> _Worker | None:
        for w in self._workers:
            if (w.device == device and w.job is None and not w.stopping and not w.eof
                    and w.process.exitcode is None):
                return w
        return None

    def _spawn(self, device: str) -> _Worker:
        reader, writer = self._ctx.Pipe(duplex=False)
        jobs_reader, jobs = self._ctx.Pipe(duplex=False)
        flag = self._ctx.Value("b", 0, lock=False)  # one byte: no lock a kill could orphan
        self._spawned += 1
        process = self._ctx.Process(
            target=serve, args=(jobs_reader, writer, flag),
            kwargs={"threads": self._threads(device), "target": self.target},
            name=f"evotui-worker-{device}-{self._spawned}")
        try:
            # Blocked here, SIGINT, SIGHUP and SIGTERM (which a terminal or a supervisor send to
            # the whole process group) are blocked in the child from its first instruction;
            # serve() then ignores them. The engine decides what a stop means.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, TERMINAL_SIGNALS)
            try:
                process.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        except BaseException:
            reader.close()
            jobs.close()
            raise
        finally:  # the child holds its own copies; its end of file is the worker's
            writer.close()
            jobs_reader.close()
        w = _Worker(device, process, reader, jobs, flag, time.monotonic())
        self._workers.append(w)
        return w

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
                readers = {w.reader: w for w in self._workers if not w.eof}
            if readers:
                for reader in wait(list(readers), timeout=POLL):
                    self._read(readers[reader])
            else:
                time.sleep(POLL)
            self._check(time.monotonic())

    def _read(self, w: _Worker) -> None:
        try:
            while True:
                _, event = w.reader.recv()
                self._handle(w, event)
                if not w.reader.poll():
                    return
        except (EOFError, OSError):
            w.eof = True  # everything the worker sent has been read
            w.process.join(0.05)  # usually exiting right now; _check reaps it otherwise

    def _handle(self, w: _Worker, event: Event | dict[str, Any]) -> None:
        w.last_seen = time.monotonic()
        event = parse(event)
        kind = event.kind
        job = w.job  # only this thread ends a job; submit only gives jobs to idle workers
        if kind == "heartbeat" or job is None:
            return
        if isinstance(event, Result):
            with self._lock:
                free = w.cause is None
                if free:  # done: the slot is free before the result goes out
                    w.assign(None, time.monotonic())
                    sends = self._grant()
                else:  # being killed: the result waits for the process to end
                    w.result = event
                    w.stop()
                    if w.deadline is None:
                        w.deadline = time.monotonic() + self.grace
            if free:
                self._emit(job.candidate_id, event)
                _deliver(sends, later=True)
            return
        if isinstance(event, WorkerError):
            with self._lock:  # the worker exits after an error; one that lingers is ended
                w.error = event
                if w.deadline is None:
                    w.deadline = time.monotonic() + self.grace
            return
        self._emit(job.candidate_id, event)

    def _check(self, now: float) -> None:
        done = []
        with self._lock:
            for w in self._workers:
                if w.process.exitcode is not None:
                    w.exited_at = w.exited_at or now
                    if w.eof or now - w.exited_at > LINGER:
                        done.append(w)
                elif w.job is None and self._closing and not w.stopping:
                    w.stop()  # idle at shutdown: asked to exit, ended if it does not
                    w.deadline = now + self.grace
                elif (w.job is not None and w.cause is None
                      and now - w.last_seen > self.heartbeat_timeout):
                    w.cause = f"no heartbeat for {self.heartbeat_timeout:g} s"
                    w.process.kill()  # silent: stopped, hung or wedged; SIGTERM may not land
                    w.terminated, w.deadline = True, None
                elif w.deadline is not None and now >= w.deadline:
                    w.process.kill()  # it ignores SIGTERM: the engine decides, not a signal
                    w.terminated, w.deadline = True, None
            for w in done:
                self._workers.remove(w)
            sends = self._grant() if done else []
        _deliver(sends, later=True)
        for w in done:  # the slot is free before the terminal event goes out
            w.reader.close()
            w.jobs.close()
            if w.job is not None:
                self._emit(w.job.candidate_id, outcome(w))

    def _kill_now(self) -> None:
        """At interpreter exit: no worker outlives the engine."""
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            if w.process.exitcode is None:
                w.process.kill()
        for w in workers:
            w.process.join(1.0)


def slot_memory(device: str) -> int | None:
    """Bytes of memory a GPU slot has (NVML); None for a CPU slot or when NVML cannot say."""
    if kind(device) == "cpu":
        return None
    try:
        from evotui.gpu import nvml

        index = int(device.split(":")[1]) if ":" in device else 0
        sample = next((g for g in nvml.sample() if g.index == index), None)
    except Exception:  # noqa: BLE001 - no NVML: the size is unknown, auto does not shard
        return None
    if sample is None or sample.mem_total_mib is None:
        return None
    return int(sample.mem_total_mib * (1 << 20))


def _deliver(sends: list[tuple[_Worker, bytes]], later: bool = False) -> None:
    """Send each job to its worker; ``later``: from a thread of its own (the monitor's caller
    must not block on a stopped worker's full pipe). A dead worker's job fails by its exit."""
    def send() -> None:
        for w, data in sends:
            with contextlib.suppress(OSError):
                w.jobs.send_bytes(data)

    if later and sends:
        threading.Thread(target=send, name="evotui-send", daemon=True).start()
    elif sends:
        send()


def outcome(w: _Worker) -> Result | Failed:
    """The terminal event of a worker that has exited and been read to the end."""
    code = w.process.exitcode
    if w.result is not None:
        return w.result
    if w.error is not None:
        return Failed(w.error.error or "error", code, w.error.traceback)
    name = _signal(code)
    if w.cause is not None:
        return Failed(w.cause, code, signal=name)
    return Failed(f"worker exited with code {code}" + (f" ({name})" if name else ""), code,
                  signal=name)


def _signal(code: int | None) -> str | None:
    """The signal's name when ``code`` says one ended the process."""
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


_LIVE: weakref.WeakSet[LocalExecutor] = weakref.WeakSet()


@atexit.register
def _reap_all() -> None:
    for executor in list(_LIVE):
        executor._kill_now()
