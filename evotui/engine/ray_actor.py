"""The node side of the Ray executor: the actor that holds one slot on some node of the cluster.

:class:`SlotActor` is a plain class; :mod:`evotui.engine.ray_executor` makes it a threaded Ray
actor (several calls at once), so a ``control`` call reaches it while ``run`` trains. It serves
one job at a time, like a local worker (:func:`evotui.engine.worker.serve`), and keeps torch
imported and the prepared dataset in memory between jobs. ``run`` drives the same job-running
function as a local worker, :func:`evotui.engine.worker.execute`; events go into a buffer that
the head drains with ``drain`` (a long poll), heartbeats included.

Checkpoints: with ``blobs`` None the job's paths are used as they are (a shared filesystem);
with ``blobs`` (head path -> object ref of the file's bytes) the files the job reads are written
to this actor's scratch directory first, the job runs on those copies, and ``run`` returns the
checkpoint's bytes for the head to write where the engine reads it.

Scratch directories (``evotui-ray-w<pid>-*`` in the node's temporary directory) go with their
actor: ``close`` removes its own (the executor calls it before ending the actor), and a new
actor removes those of actors on its node whose process is gone (SIGKILLed, OOM-killed,
``ray.kill``: nothing of theirs ran to clean up).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
import threading
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

from evotui.engine import worker
from evotui.engine.jobs import Job, Warm

DRAIN_WAIT = 0.5  # seconds a drain call waits for the first event
SCRATCH = "evotui-ray-w"  # + "<pid>-<random>": an actor's scratch directory


def scratch_dirs(root: str | Path | None = None) -> list[Path]:
    """The actors' scratch directories under ``root`` (the temporary directory)."""
    return sorted(Path(root or tempfile.gettempdir()).glob(f"{SCRATCH}*-*"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def sweep(root: str | Path | None = None) -> list[Path]:
    """Remove the scratch directories of actors whose process is gone; the ones removed."""
    gone = []
    for path in scratch_dirs(root):
        pid = path.name[len(SCRATCH):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path)
    return gone


class _Flag:
    """The job's command: 1 pause, 2 kill (``evotui.engine.worker.PAUSE`` / ``KILL``)."""

    def __init__(self) -> None:
        self.value = 0


def local_device(device: str) -> str:
    """A slot's device as this actor sees it: Ray gives a GPU actor one visible GPU."""
    return "cuda:0" if device.startswith("cuda") else device


class SlotActor:
    def __init__(self, threads: int | None = None):
        self.threads = threads
        self._events: deque[tuple[str, dict[str, Any]]] = deque()
        self._cond = threading.Condition()
        self._flags: dict[str, _Flag] = {}
        self._busy = threading.Lock()  # one job (or warm-up) at a time
        self._active = False  # a job is running: a drain waits for its events
        sweep()  # what actors that died on this node left behind
        self._scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH}{os.getpid()}-"))

    def info(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {"pid": os.getpid(), "node": ctx.get_node_id(),
                "ip": ray.util.get_node_ip_address(),
                "gpus": [str(g) for g in ray.get_gpu_ids()], "scratch": str(self._scratch)}

    def free_port(self) -> int:
        """A port free on this node now (for rank 0 of an FSDP job to listen on)."""
        from evotui.engine.sharded import free_port

        return free_port()

    def close(self) -> None:
        """Remove this actor's scratch directory (before the executor ends the actor)."""
        shutil.rmtree(self._scratch, ignore_errors=True)

    def sees(self, path: str, token: str) -> bool:
        """Whether this node reads ``token`` from ``path`` (the head's probe file)."""
        try:
            return Path(path).read_text() == token
        except OSError:
            return False

    def control(self, candidate_id: str, value: int) -> None:
        flag = self._flags.setdefault(candidate_id, _Flag())
        if value == worker.PAUSE and flag.value:
            return  # a kill is not downgraded to a pause
        flag.value = value

    def drain(self, wait: float = DRAIN_WAIT) -> list[tuple[str, dict[str, Any]]]:
        """The events since the last drain, waiting up to ``wait`` seconds for the first."""
        with self._cond:
            if not self._events and self._active:
                self._cond.wait(wait)
            out = list(self._events)
            self._events.clear()
        return out

    def _send(self, candidate_id: str) -> worker.Send:
        def send(event: dict[str, Any]) -> None:
            with self._cond:
                self._events.append((candidate_id, event))
                self._cond.notify_all()

        return send

    def warm(self, warm: Warm) -> None:
        with self._busy:
            beat = worker.Heartbeat(self._send(""))  # a job may already wait for this actor
            beat.start()
            try:
                worker.warm_up(replace(warm, device=local_device(warm.device)), self.threads)
            finally:
                beat.stop()

    def run(self, job: Job, blobs: dict[str, Any] | None = None
            ) -> tuple[dict[str, Any], bytes | None]:
        """Train ``job``; its terminal event (``result`` or ``error``) and, with ``blobs``, the
        bytes of the checkpoint it wrote."""
        self._active = True  # from now on (a warm-up may hold the slot a while)
        with self._busy:
            flag = self._flags.setdefault(job.candidate_id, _Flag())
            workdir = self._scratch / job.candidate_id
            try:
                here = self._localise(job, blobs, workdir) if blobs is not None else replace(
                    job, device=local_device(job.device))
                final = worker.execute(here, self._send(job.candidate_id), flag, self.threads)
                data = None
                if blobs is not None and not job.rank and final.get(  # rank 0 wrote it
                        "kind") == "result" and final.get("checkpoint"):
                    data = Path(final["checkpoint"]).read_bytes()
                return final, data
            finally:
                with self._cond:  # a waiting drain returns now, not at its timeout
                    self._active = False
                    self._cond.notify_all()
                self._flags.pop(job.candidate_id, None)
                shutil.rmtree(workdir, ignore_errors=True)
                worker._release_memory()

    def _localise(self, job: Job, blobs: dict[str, Any], workdir: Path) -> Job:
        """The job with every file it reads copied into ``workdir`` and its checkpoint written
        there; the head's paths stay the keys of ``blobs``."""
        import ray

        workdir.mkdir(parents=True, exist_ok=True)
        where: dict[str, str] = {}
        for i, (path, ref) in enumerate(blobs.items()):
            local = workdir / f"in{i}-{Path(path).name}"
            local.write_bytes(ray.get(ref))
            where[path] = str(local)
        config = copy.deepcopy(job.config)
        init = (config.get("train") or {}).get("init_checkpoint")
        if init:
            config["train"]["init_checkpoint"] = where.get(init, init)
        inherit = [(c, where.get(p, p), n) for c, p, n in job.inherit] if job.inherit else None
        return replace(job, config=config, device=local_device(job.device), inherit=inherit,
                       checkpoint_path=str(workdir / Path(job.checkpoint_path).name),
                       resume_from=where.get(job.resume_from, job.resume_from)
                       if job.resume_from else None)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            shutil.rmtree(self._scratch, ignore_errors=True)
