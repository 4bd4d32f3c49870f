"""What the GPU pane shows, sampled off the event loop: per-device NVML readings and the memory of
our worker processes; without an NVIDIA GPU or driver, this machine's CPU and RAM instead, with
a one-line notice. Never raises for a missing driver or an unreadable field (None: N/A).

A sampler is any callable ``(workers) -> Reading`` where ``workers`` is the engine's
``store.get_state("workers")`` ({device: {"pid", "candidate"}}); the app takes one as an
argument, so tests inject a fixed reading. Imports no Textual and no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from evotui.gpu import nvml

MIB = 2**20


@dataclass(frozen=True)
class Proc:
    """One of our worker processes: its device, its candidate and its memory (GPU memory on a
    GPU, resident memory on the CPU); None: unreadable."""

    pid: int
    candidate: str | None
    device: str
    mem_mib: float | None
    cpu_pct: float | None = None  # of one core, since the previous reading


@dataclass(frozen=True)
class Reading:
    gpus: list[nvml.GpuSample] = field(default_factory=list)
    notice: str | None = None  # why there are no GPU gauges
    cpu_pct: float | None = None
    cpu_count: int | None = None
    ram_used_mib: float | None = None
    ram_total_mib: float | None = None
    procs: list[Proc] = field(default_factory=list)


Sampler = Callable[[Mapping[str, Any]], Reading]


def _workers(workers: Mapping[str, Any]) -> list[tuple[int, str | None, str]]:
    out = []
    for device, w in (workers or {}).items():
        if isinstance(w, Mapping) and isinstance(w.get("pid"), int):
            out.append((w["pid"], w.get("candidate"), str(device)))
    return out


def _rss_mib(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / MIB
    except (psutil.Error, OSError):
        return None


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, OSError):
        return False


class SystemSampler:
    """NVML when it answers, else psutil. The first CPU reading covers the time since the
    sampler was made (psutil measures between calls); a worker's CPU, the time since the
    reading that first saw it (None in that first one)."""

    def __init__(self) -> None:
        import psutil

        psutil.cpu_percent(interval=None)  # start the first measurement interval now
        self._procs: dict[int, Any] = {}  # pid -> psutil.Process, kept for cpu_percent

    def cpu_of(self, pid: int) -> float | None:
        """The worker's CPU (percent of one core) since the last call for it."""
        import psutil

        try:
            proc = self._procs.get(pid)
            if proc is None:
                self._procs[pid] = psutil.Process(pid)
                self._procs[pid].cpu_percent(interval=None)  # the interval starts now
                return None
            return proc.cpu_percent(interval=None)
        except (psutil.Error, OSError):
            self._procs.pop(pid, None)
            return None

    def __call__(self, workers: Mapping[str, Any]) -> Reading:
        ok, reason = nvml.available()
        ours = [w for w in _workers(workers) if _alive(w[0])]
        for gone in set(self._procs) - {pid for pid, _, _ in ours}:
            del self._procs[gone]
        if ok:
            gpus = nvml.sample()
            if gpus:
                return Reading(gpus=gpus, procs=_gpu_procs(gpus, ours, self.cpu_of))
            reason = "NVML reported no device"
        return self._cpu(reason, ours)

    def _cpu(self, reason: str, ours: list[tuple[int, str | None, str]]) -> Reading:
        import psutil

        try:
            mem = psutil.virtual_memory()
            used, total = (mem.total - mem.available) / MIB, mem.total / MIB
        except (psutil.Error, OSError):
            used = total = None
        return Reading(notice=f"no GPU: {reason}",
                       cpu_pct=psutil.cpu_percent(interval=None),
                       cpu_count=psutil.cpu_count(), ram_used_mib=used, ram_total_mib=total,
                       procs=[Proc(pid, cand, dev, _rss_mib(pid), self.cpu_of(pid))
                              for pid, cand, dev in ours])


def _gpu_procs(gpus: list[nvml.GpuSample], ours: list[tuple[int, str | None, str]],
               cpu_of: Callable[[int], float | None] = lambda pid: None) -> list[Proc]:
    """Our workers' GPU memory, from each device's process list (N/A where NVML hides it or
    the pid is not listed, e.g. in a container with its own pid namespace)."""
    by_pid: dict[int, float | None] = {}
    for g in gpus:
        for p in g.processes or ():
            by_pid[p.pid] = p.used_mib
    out = []
    for pid, cand, dev in ours:
        mem = by_pid.get(pid) if dev.startswith("cuda") else _rss_mib(pid)
        out.append(Proc(pid, cand, dev, mem, cpu_of(pid)))
    return out


def fixed(reading: Reading) -> Sampler:
    """A sampler that always gives ``reading`` (tests, snapshots)."""
    return lambda workers: reading
