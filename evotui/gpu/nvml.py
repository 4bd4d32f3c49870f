"""Per-GPU telemetry from NVML: utilisation, memory, temperature, power, clocks, processes.

NVML is initialised once, on first use, and shut down at exit. Nothing here raises for a
missing driver or an unreadable field: ``available()`` says why there is nothing to show,
``sample()`` returns ``[]`` without a driver, and a field the device will not report is None.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

try:
    import pynvml
except ImportError:  # nvidia-ml-py is a dependency, but the TUI must start without it
    pynvml = None

T = TypeVar("T")
MIB = 2**20

_lock = threading.Lock()
_ready: bool | None = None  # None: not tried yet
_reason = ""
_registered = False


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_mib: float | None = None


@dataclass(frozen=True)
class GpuSample:
    """One reading of one device; None means NVML could not report that field."""

    index: int
    name: str | None = None
    util_pct: float | None = None  # SM busy over the last sample period
    mem_util_pct: float | None = None  # memory controller busy
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    temp_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    processes: tuple[GpuProcess, ...] | None = None


def _read(fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except Exception:  # NVMLError_NotSupported, NoPermission, GpuIsLost, ...: N/A
        return None


def _why(err: Exception) -> str:
    reasons = {
        "NVMLError_LibraryNotFound": "no NVIDIA driver (the NVML library was not found)",
        "NVMLError_DriverNotLoaded": "the NVIDIA driver is not loaded",
        "NVMLError_NoPermission": "no permission to query NVML",
        "NVMLError_LibRmVersionMismatch": "NVML and the kernel driver differ in version "
                                          "(reload the driver or reboot)",
    }
    for cls in type(err).__mro__:
        if cls.__name__ in reasons:
            return reasons[cls.__name__]
    return f"NVML is unavailable: {err}"


def _init() -> bool:
    global _ready, _reason, _registered
    with _lock:
        if _ready is None:
            if pynvml is None:
                _ready, _reason = False, "nvidia-ml-py is not installed"
                return False
            try:
                pynvml.nvmlInit()
            except Exception as err:
                _ready, _reason = False, _why(err)
                return False
            _ready, _reason = True, ""
            if not _registered:
                atexit.register(shutdown)
                _registered = True
        return _ready


def shutdown() -> None:
    """Shut NVML down (registered at exit); the next call initialises it again."""
    global _ready, _reason
    with _lock:
        if _ready and pynvml is not None:
            _read(pynvml.nvmlShutdown)
        _ready, _reason = None, ""


def available() -> tuple[bool, str]:
    """(True, "<n> GPU(s), driver <version>") or (False, a one-line reason)."""
    if not _init():
        return False, _reason
    count = _read(pynvml.nvmlDeviceGetCount)
    if count is None:
        return False, "NVML could not count the GPUs"
    if count == 0:
        return False, "no NVIDIA GPU found"
    driver = _text(_read(pynvml.nvmlSystemGetDriverVersion)) or "unknown"
    return True, f"{count} GPU{'s' if count > 1 else ''}, driver {driver}"


def sample() -> list[GpuSample]:
    """One reading per device, in index order; [] without a driver or a GPU."""
    if not _init():
        return []
    count = _read(pynvml.nvmlDeviceGetCount) or 0
    return [_sample_device(i) for i in range(count)]


def _text(value: Any) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _scaled(value: Any, divisor: float) -> float | None:
    return None if value is None else float(value) / divisor


def _sample_device(index: int) -> GpuSample:
    nv = pynvml
    h = _read(lambda: nv.nvmlDeviceGetHandleByIndex(index))
    if h is None:
        return GpuSample(index)
    return GpuSample(
        index=index,
        name=_text(_read(lambda: nv.nvmlDeviceGetName(h))),
        util_pct=_scaled(_read(lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu), 1),
        mem_util_pct=_scaled(_read(lambda: nv.nvmlDeviceGetUtilizationRates(h).memory), 1),
        mem_used_mib=_scaled(_read(lambda: nv.nvmlDeviceGetMemoryInfo(h).used), MIB),
        mem_total_mib=_scaled(_read(lambda: nv.nvmlDeviceGetMemoryInfo(h).total), MIB),
        temp_c=_scaled(_read(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
                       1),
        power_w=_scaled(_read(lambda: nv.nvmlDeviceGetPowerUsage(h)), 1000),  # mW
        power_limit_w=_scaled(_read(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h)), 1000),
        sm_clock_mhz=_scaled(_read(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)), 1),
        mem_clock_mhz=_scaled(_read(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
                              1),
        processes=_processes(h),
    )


def _processes(h: Any) -> tuple[GpuProcess, ...] | None:
    """Compute and graphics processes on the device, one entry per pid (None if NVML could
    list neither kind)."""
    nv = pynvml
    used: dict[int, float | None] = {}
    listed = False
    for query in (nv.nvmlDeviceGetComputeRunningProcesses,
                  nv.nvmlDeviceGetGraphicsRunningProcesses):
        procs = _read(lambda q=query: list(q(h)))
        if procs is None:
            continue
        listed = True
        for p in procs:
            pid = getattr(p, "pid", None)
            if pid is None:
                continue
            mem = getattr(p, "usedGpuMemory", None)  # None where the driver hides it
            mib = float(mem) / MIB if isinstance(mem, int | float) else None
            old = used.get(pid)
            used[pid] = mib if old is None else max(old, mib or 0.0)
    if not listed:
        return None
    return tuple(GpuProcess(pid, mib) for pid, mib in sorted(used.items()))
