"""The Ray executor: one long-lived Ray actor per slot, anywhere on a Ray cluster.

The engine, the run store and the app stay on the head node (where this runs); each slot is a
:class:`~evotui.engine.ray_actor.SlotActor` placed by Ray's resource requests (``num_gpus=1``
per GPU slot, ``num_cpus`` per CPU slot) and kept warm between jobs, like a local worker. A
threaded actor takes a ``control`` call while it trains, so pause and kill reach it at its next
step boundary, as they reach a local worker.

One monitor thread long-polls every busy actor's event buffer (``drain``), watches heartbeats
and deadlines, and turns an actor's death into the job's one ``failed`` event: ``actor died``
(the process ended: a crash, the OOM killer, a signal), ``node lost`` (its node left the
cluster), ``killed`` (a kill the worker did not obey within the grace period), ``no heartbeat
for N s``. A slot whose actor died gets a new actor at once; Ray places it when it has the
capacity, and until then the slot is not free, so the run goes on with the slots it has.

Checkpoints (``checkpoints``): ``shared`` when every node reads the checkpoint directory (a
probe file written here and read by a task on each node), else ``copy``: the files a job reads
(its resume checkpoint, its parents', ``train.init_checkpoint``) go to its node through Ray's
object store, and the checkpoint it writes comes back to the head, written where the engine
reads it. :func:`checkpoint_mode` decides (``auto``) and says why, for ``run.log``.

FSDP candidates (``train.parallel: fsdp`` with ``train.shards: k``) train on k slot actors of
one node at once, one rank each (NCCL between their GPUs, gloo between CPU slots), rank 0's
actor sending the events. Such a job waits, holding every slot of its kind that frees up
(oldest waiting job first), until one node has k of them, then releases the rest; it fails at
once when no node can ever hold k (all slots placed, none with k). A rank whose actor dies
ends rank 0 with ``FSDP rank r: actor died`` (or ``node lost``); rank 0's death ends the other
ranks. ``train.parallel: auto`` trains unsharded here (a slot's memory is not known).

At shutdown every actor removes its scratch directory before it is ended; an actor that died
left its own behind, and the actor that replaces it on that node removes it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from evotui.atomic import write_bytes
from evotui.engine.events import parse
from evotui.engine.executor import Event, Executor, check_action
from evotui.engine.jobs import Job, Warm, job_shards
from evotui.engine.ray_actor import SlotActor
from evotui.engine.ray_cluster import (  # noqa: F401 - the executor's module offers them
    answers,
    checkpoint_mode,
    cluster_slots,
    connect,
    node_lost,
    open_ray,
)
from evotui.engine.ray_slots import Slot, Waiting, hold, idle, refusal, release
from evotui.engine.worker import KILL, PAUSE

POLL = 0.2  # seconds between checks on heartbeats, deadlines and actors
RETRY = 10.0  # seconds before placing again an actor that failed to start
CLOSE_WAIT = 5.0  # seconds shutdown waits for the actors to remove their scratch directories


class RayExecutor(Executor):
    def __init__(self, slots: list[str], *, address: str | None = None,
                 cpu_threads: int | None = None, checkpoints: str = "shared",
                 heartbeat_timeout: float = 60.0, grace: float = 5.0):
        """``slots``: ``cpu`` / ``cuda`` labels (see :func:`cluster_slots`); ``address``: the
        cluster (None: whatever this process is connected to, else a Ray started here);
        ``cpu_threads``: CPUs (and torch threads) per CPU slot, 1 by default;
        ``checkpoints``: ``shared`` or ``copy`` (see :func:`checkpoint_mode`)."""
        super().__init__(slots)
        if checkpoints not in ("shared", "copy"):
            raise ValueError(f"unknown checkpoint mode {checkpoints!r}; use shared or copy")
        self._owns_ray = connect(address)
        self.checkpoints = checkpoints
        self.cpu_threads = cpu_threads or 1
        self.heartbeat_timeout, self.grace = heartbeat_timeout, grace
        self._lock = threading.Lock()
        self._slots = [Slot(label) for label in self.slots]
        self._warm: Warm | None = None
        self._closing = False
        self._blobs: dict[str, tuple[float, Any]] = {}  # head path -> (mtime, object ref)
        self._waiting: list[Waiting] = []  # FSDP jobs waiting for k slots of one node
        for slot in self._slots:
            self._place(slot)
        self._thread = threading.Thread(target=self._monitor, name="evotui-ray", daemon=True)
        self._thread.start()

    # -- the engine's interface ---------------------------------------------------------
    def busy_slots(self) -> list[str]:
        """Slots running a job (a rank of one), held by a waiting FSDP job, or whose actor Ray
        has not placed (yet)."""
        with self._lock:
            return [s.label for s in self._slots if not idle(s)]

    def running(self) -> list[str]:
        with self._lock:
            return ([s.job.candidate_id for s in self._slots if s.job is not None and not s.rank]
                    + [w.job.candidate_id for w in self._waiting])

    def submit(self, job: Job) -> None:
        shards, _ = job_shards(job, None)  # on Ray, auto trains unsharded
        blobs = self._ship(job) if self.checkpoints == "copy" else None
        with self._lock:
            if self._closing:
                raise RuntimeError("the executor is shut down")
            if job.candidate_id in self._ids():
                raise ValueError(f"candidate {job.candidate_id} is already running")
            slot = next((s for s in self._slots if s.label == job.device and idle(s)),
                        None)
            if slot is None:
                raise ValueError(f"no free slot on {job.device!r} (slots: {self.slots})")
            if shards > 1:
                self._submit_sharded(replace(job, shards=shards), blobs)
                return
            slot.job, slot.last_seen = job, time.monotonic()
            slot.cause = slot.deadline = None
            slot.run_ref = slot.actor.run.remote(job, blobs)
            self._emit(job.candidate_id, parse({"kind": "started", "device": self._where(slot),
                                                "pid": slot.info["pid"]}))

    def warm(self, config: dict[str, Any], cache_dir: str | None = None) -> None:
        """Every placed actor imports torch and prepares the dataset now; actors placed later
        (a replaced slot) warm up when Ray places them."""
        with self._lock:
            self._warm = Warm(config, "cpu", cache_dir)
            for slot in self._slots:
                if slot.info is not None and slot.job is None:
                    slot.warming = slot.actor.warm.remote(Warm(config, slot.label, cache_dir))

    def request(self, candidate_id: str, action: str) -> bool:
        check_action(action)
        with self._lock:
            waiting = next((w for w in self._waiting if w.job.candidate_id == candidate_id),
                           None)
            if waiting is not None and action == "pause":
                waiting.paused = True
                return True
            if waiting is not None:
                self._waiting.remove(waiting)
                release(self._slots, candidate_id)
                self._emit(candidate_id, parse({"kind": "failed", "reason": "killed"}))
                self._grant()
                return True
            slot = self._running(candidate_id)
            if slot is None or slot.actor is None:
                return False
            slot.actor.control.remote(candidate_id, PAUSE if action == "pause" else KILL)
            if action == "kill":
                slot.cause = slot.cause or "killed"
                if slot.deadline is None or slot.deadline > time.monotonic() + self.grace:
                    slot.deadline = time.monotonic() + self.grace
        return True

    async def shutdown(self, kill: bool = False) -> None:
        with self._lock:
            self._closing = True
            ids = [s.job.candidate_id for s in self._slots if s.job is not None and not s.rank]
            for w in self._waiting:
                release(self._slots, w.job.candidate_id)
                self._emit(w.job.candidate_id, parse({"kind": "failed", "reason": "killed" if kill
                           else f"the executor shut down before {w.job.shards} slots were free"}))
            self._waiting = []
        if kill:
            for candidate_id in ids:
                self.request(candidate_id, "kill")
        while self._thread.is_alive():
            await asyncio.sleep(0.05)
        actors = [slot.actor for slot in self._slots if slot.actor is not None]
        closing = [a.close.remote() for a in actors]  # their scratch directories
        if closing:
            await asyncio.to_thread(ray.wait, closing, num_returns=len(closing),
                                    timeout=CLOSE_WAIT)
        for actor in actors:
            ray.kill(actor)
        if self._owns_ray:
            ray.shutdown()
        self._end()

    # -- actors -------------------------------------------------------------------------
    def _place(self, slot: Slot) -> None:
        """A new actor for ``slot``; Ray places it when it has the resources."""
        gpu = slot.label == "cuda"
        actor_class = ray.remote(SlotActor).options(
            num_gpus=1 if gpu else 0, num_cpus=1 if gpu else self.cpu_threads,
            max_concurrency=4, max_restarts=0)
        slot.actor = actor_class.remote(None if gpu else self.cpu_threads)
        slot.info, slot.ready_ref, slot.warming = None, slot.actor.info.remote(), None

    def _running(self, candidate_id: str) -> Slot | None:
        """The slot of the candidate's job (of its rank 0)."""
        return next((s for s in self._slots if s.job is not None and not s.rank
                     and s.job.candidate_id == candidate_id), None)

    def _ranks(self, candidate_id: str) -> list[Slot]:
        """Every slot that runs a rank of the candidate's job."""
        return [s for s in self._slots if s.job is not None
                and s.job.candidate_id == candidate_id]

    def _ids(self) -> set[str]:
        return ({s.job.candidate_id for s in self._slots if s.job is not None}
                | {w.job.candidate_id for w in self._waiting})

    # -- FSDP jobs: k slots of one node -------------------------------------------------
    def _submit_sharded(self, job: Job, blobs: dict[str, Any] | None) -> None:
        """Under the lock: fail a job no node can hold, else queue it and start what can."""
        reason = refusal(job, self._slots)
        if reason is not None:
            self._emit(job.candidate_id, parse({"kind": "failed", "reason": reason}))
            return
        self._waiting.append(Waiting(job, blobs))
        self._grant()
        if any(w.job.candidate_id == job.candidate_id for w in self._waiting):
            self._emit(job.candidate_id, parse({"kind": "log", "text": (
                f"fsdp: waiting for {job.shards} {job.device} slots of one node")}))

    def _grant(self) -> None:
        """Under the lock: waiting FSDP jobs hold the idle slots (:func:`hold`); those with k
        on one node start there; the slots a started job let go may complete another. A job
        that no node can hold once every slot is placed (a node lost for good) fails, saying
        so, rather than holding the idle slots forever."""
        for w in list(self._waiting):
            reason = refusal(w.job, self._slots)
            if reason is not None:
                self._waiting.remove(w)
                release(self._slots, w.job.candidate_id)
                self._emit(w.job.candidate_id, parse({"kind": "failed", "reason": reason}))
        started = True
        while started:
            started = False
            for w, ranks in hold(self._slots, self._waiting):
                try:
                    # under the lock, from the engine's loop: an idle actor answers at once,
                    # one that does not in a few seconds is treated as gone for this pass
                    port = ray.get(ranks[0].actor.free_port.remote(), timeout=5)
                except (RayActorError, GetTimeoutError):
                    continue  # that actor is gone: its death frees the slot; the job waits on
                release(self._slots, w.job.candidate_id)
                self._waiting.remove(w)
                self._start_ranks(w, ranks, port)
                started = True

    def _start_ranks(self, w: Waiting, ranks: list[Slot], port: int) -> None:
        """Under the lock: rank r of the job on ``ranks[r]``; rank 0 listens on ``port``."""
        cid = w.job.candidate_id
        master = f"127.0.0.1:{port}"  # one node: every rank reaches rank 0 on loopback
        if w.paused:
            ranks[0].actor.control.remote(cid, PAUSE)
        for r, s in enumerate(ranks):
            job = replace(w.job, rank=r, master=master, devices=None)
            s.job, s.rank, s.last_seen = job, r, time.monotonic()
            s.cause = s.deadline = None
            s.run_ref = s.actor.run.remote(job, w.blobs)
        self._emit(cid, parse({"kind": "started", "device": self._where(ranks[0]),
                               "pid": ranks[0].info["pid"]}))
        self._emit(cid, parse({"kind": "log", "text": f"fsdp: training on {len(ranks)} "
                               f"{ranks[0].label} slots of {self._where(ranks[0])}"}))

    def _end_group(self, slot: Slot, why: str) -> None:
        """Under the lock: a rank of ``slot``'s job ended badly; end the others (rank 0 reports
        ``why`` as the job's reason)."""
        job = slot.job
        if job is None or job.shards < 2:
            return
        for other in self._ranks(job.candidate_id):
            if other is not slot and other.actor is not None:
                other.cause = other.cause or why
                ray.kill(other.actor)  # a rank left alone waits in a collective

    def _where(self, slot: Slot) -> str:
        info = slot.info or {}
        return f"{slot.label}@{info.get('ip', '?')}"

    def _ship(self, job: Job) -> dict[str, Any]:
        """Object refs of the files ``job`` reads, each file put once while it is unchanged."""
        paths = [job.resume_from] if job.resume_from else []
        paths += sorted({p for _, p, _ in job.inherit or []})
        init = (job.config.get("train") or {}).get("init_checkpoint")
        if init:
            paths.append(init)
        refs = {}
        for path in paths:
            mtime = Path(path).stat().st_mtime
            held = self._blobs.get(path)
            if held is None or held[0] != mtime:
                held = (mtime, ray.put(Path(path).read_bytes()))
                self._blobs[path] = held
            refs[path] = held[1]
        return refs

    # -- the monitor thread -------------------------------------------------------------
    def _monitor(self) -> None:
        while True:
            with self._lock:
                if self._closing and all(s.job is None for s in self._slots):
                    return
                owners: dict[Any, tuple[Slot, str]] = {}
                for s in self._slots:
                    if s.ready_ref is not None:
                        owners[s.ready_ref] = (s, "ready")
                    if s.job is not None:
                        if s.drain_ref is None:
                            s.drain_ref = s.actor.drain.remote()
                        owners[s.drain_ref] = (s, "drain")
                        owners[s.run_ref] = (s, "run")
            if owners:
                refs = list(owners)
                ray.wait(refs, num_returns=1, timeout=POLL)
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                ready.sort(key=lambda ref: owners[ref][1] == "run")  # events before results
                for ref in ready:
                    slot, what = owners[ref]
                    self._ready(slot, what, ref)
            else:
                time.sleep(POLL)
            self._check(time.monotonic())

    def _ready(self, slot: Slot, what: str, ref: Any) -> None:
        current = {"ready": slot.ready_ref, "drain": slot.drain_ref, "run": slot.run_ref}
        if current[what] is not ref:
            return  # the slot has moved on (its actor died and was replaced)
        try:
            if what == "ready":
                info = ray.get(ref)
                with self._lock:
                    slot.info, slot.ready_ref = info, None
                    self._grant()  # a waiting FSDP job may start with this slot
                    if self._warm is not None and slot.job is None:
                        slot.warming = slot.actor.warm.remote(
                            Warm(self._warm.config, slot.label, self._warm.cache_dir))
            elif what == "drain":
                slot.drain_ref = None
                self._events(slot, ray.get(ref))
            else:
                final, data = ray.get(ref)
                if slot.drain_ref is not None:  # what the actor sent before its result
                    self._events(slot, ray.get(slot.drain_ref))
                self._events(slot, ray.get(slot.actor.drain.remote(0.0)))
                self._finish(slot, final, data)
        except RayActorError as e:
            self._died(slot, e)
        except Exception as e:  # noqa: BLE001 - the monitor thread must outlive any one job
            if what == "run":  # e.g. a copied checkpoint the object store lost: the job fails
                self._finish(slot, {"kind": "error", "error": f"{type(e).__name__}: {e}"}, None)
            else:
                self._died(slot, e)

    def _events(self, slot: Slot, events: list[tuple[str, Event]]) -> None:
        job = slot.job
        if job is None:
            return
        if events:  # an answer without events is no heartbeat: the job's thread may hang
            slot.last_seen = time.monotonic()
        if slot.rank:
            return  # rank 0 speaks for the job
        for cid, event in events:
            if cid != job.candidate_id or event.get("kind") == "heartbeat":
                continue  # a warm-up's heartbeat, or the previous job's last words
            if event.get("kind") == "checkpoint" and self.checkpoints == "copy":
                event = {**event, "path": job.checkpoint_path}
            self._emit(cid, parse(event))

    def _finish(self, slot: Slot, final: Event, data: bytes | None) -> None:
        job = slot.job
        assert job is not None
        if final.get("kind") == "error":
            final = {"kind": "failed", "reason": final.get("error", "error"),
                     "traceback": final.get("traceback")}
        elif data is not None:  # copy mode: the checkpoint comes home
            write_bytes(job.checkpoint_path, data)
            final = {**final, "checkpoint": job.checkpoint_path}
        with self._lock:
            rank = slot.rank
            if final["kind"] == "failed":
                self._end_group(slot, f"FSDP rank {rank} failed: {final['reason']}" if rank
                                else final["reason"])
            slot.job, slot.run_ref, slot.drain_ref, slot.rank = None, None, None, 0
            slot.cause = slot.deadline = None
            if final["kind"] == "failed":  # a fresh process for the next job, like a local
                ray.kill(slot.actor)  # worker that exits after an error
                self._place(slot)
            self._grant()
        if not rank:
            self._emit(job.candidate_id, parse(final))

    def _died(self, slot: Slot, error: BaseException) -> None:
        node = (slot.info or {}).get("node")
        reason = slot.cause or ("node lost" if node_lost(node, error) else "actor died")
        with self._lock:
            job, rank = slot.job, slot.rank
            self._end_group(slot, f"FSDP rank {rank}: {reason}" if rank else reason)
            slot.job, slot.run_ref, slot.drain_ref, slot.rank = None, None, None, 0
            slot.cause = slot.deadline = None
            slot.held_by = None
            if self._closing:
                slot.actor, slot.info, slot.ready_ref = None, None, None
            elif getattr(error, "actor_init_failed", False):  # e.g. evotui missing on a node:
                slot.actor, slot.info, slot.ready_ref = None, None, None  # no busy loop
                slot.retry_at = time.monotonic() + RETRY
            else:
                self._place(slot)
            self._grant()
        if job is not None and not rank:
            self._emit(job.candidate_id, parse({"kind": "failed", "reason": reason}))

    def _check(self, now: float) -> None:
        with self._lock:
            for s in self._slots:
                if s.retry_at is not None and now >= s.retry_at and not self._closing:
                    s.retry_at = None
                    self._place(s)
                if s.job is None:
                    continue
                if s.cause is None and now - s.last_seen > self.heartbeat_timeout:
                    s.cause = f"no heartbeat for {self.heartbeat_timeout:g} s"
                    ray.kill(s.actor)  # its pending calls fail: _died reports the cause
                elif s.deadline is not None and now >= s.deadline:
                    s.deadline = None
                    ray.kill(s.actor)

