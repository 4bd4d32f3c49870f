"""What the hardware did: peak memory, model FLOPs utilisation, a one-line device description.

Peak memory is measured: CUDA's allocator high-water mark, or on the CPU the process's peak
resident set (Linux ``VmHWM``, resettable; else ``ru_maxrss``; else the current RSS). MFU
divides measured FLOP/s by the device's documented dense peak; devices missing from the table
(and CPUs) have no MFU rather than a guessed one.
"""

from __future__ import annotations

import platform
import re
import resource
import sys
from pathlib import Path

import psutil
import torch

MIB = 2**20

# Dense (no 2:4 sparsity) tensor-core peaks in TFLOP/s: bf16, fp16 (both with fp32
# accumulate), tf32, and fp32 without tensor cores. Sources: NVIDIA product datasheets (data
# centre parts: the sparse figure halved where only that is printed) and the architecture
# whitepapers for GeForce parts (Ada AD102, Ampere GA102). First match on the CUDA device name
# wins, so specific patterns come before general ones.
PEAKS: list[tuple[str, dict[str, float | None]]] = [
    # Hopper: H100 / H200 / GH200 datasheets.
    (r"GH200", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    (r"H200.*NVL", {"bf16": 835.0, "fp16": 835.0, "tf32": 417.5, "fp32": 60.0}),
    (r"H200", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    (r"H100.*NVL", {"bf16": 835.0, "fp16": 835.0, "tf32": 417.5, "fp32": 60.0}),
    (r"H100.*PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    (r"H100", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0}),  # SXM (HBM3)
    # Ampere data centre: A100, A10, A40 datasheets.
    (r"A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    # A10G (AWS): no NVIDIA datasheet; the commonly cited figures (80 SMs at 1.71 GHz with the
    # GA102 consumer tensor rate), in line with measured bf16 GEMMs of ~69 TFLOP/s.
    (r"A10G", {"bf16": 70.0, "fp16": 70.0, "tf32": 35.0, "fp32": 35.0}),
    (r"\bA10\b", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    (r"\bA40\b", {"bf16": 149.7, "fp16": 149.7, "tf32": 74.8, "fp32": 37.4}),
    # Ada data centre: L40S, L40, L4 datasheets.
    (r"L40S", {"bf16": 362.0, "fp16": 362.0, "tf32": 183.0, "fp32": 91.6}),
    (r"\bL40\b", {"bf16": 181.0, "fp16": 181.0, "tf32": 90.5, "fp32": 90.5}),
    (r"\bL4\b", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    # GeForce: Ada and Ampere GA102 whitepapers (fp32 accumulate rate, half the fp16-accum).
    (r"RTX 4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}),
    (r"RTX 3090", {"bf16": 71.0, "fp16": 71.0, "tf32": 35.6, "fp32": 35.6}),
    # Volta / Turing: fp16 tensor cores only (no bf16, no tf32) — V100 and T4 datasheets.
    (r"V100.*PCIE", {"bf16": None, "fp16": 112.0, "tf32": None, "fp32": 14.0}),
    (r"V100", {"bf16": None, "fp16": 125.0, "tf32": None, "fp32": 15.7}),
    (r"\bT4\b", {"bf16": None, "fp16": 65.0, "tf32": None, "fp32": 8.1}),
]
DTYPE_KEYS = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def peak_flops(name: str, dtype: torch.dtype, tf32: bool = False) -> float | None:
    """Dense peak FLOP/s of the GPU called ``name`` for matmuls in ``dtype`` (fp32 uses the
    tf32 tensor-core peak when ``tf32``), or None when the device is not in the table."""
    key = DTYPE_KEYS.get(dtype)
    if key is None:
        return None
    for pattern, peaks in PEAKS:
        if re.search(pattern, name, re.IGNORECASE):
            value = peaks["tf32"] if key == "fp32" and tf32 else None
            value = value if value is not None else peaks[key]
            return None if value is None else value * 1e12
    return None


def tf32_enabled() -> bool:
    return bool(torch.backends.cuda.matmul.allow_tf32)


def device_peak_flops(device: torch.device | str, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s of a CUDA device from the table; None for CPUs and unknown devices."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return peak_flops(torch.cuda.get_device_name(device), dtype, tf32_enabled())


def mfu(flops_per_token: float, tokens_per_s: float, device: torch.device | str,
        dtype: torch.dtype) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s (training FLOPs per token x measured tokens/s)
    over the device's peak; None where the peak is unknown."""
    peak = device_peak_flops(device, dtype)
    return None if peak is None else flops_per_token * tokens_per_s / peak


# -- memory -------------------------------------------------------------------------------------
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm_hwm_kib() -> int | None:
    try:
        m = re.search(r"^VmHWM:\s+(\d+)\s+kB", PROC_STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def peak_memory_mb(device: torch.device | str) -> float:
    """Peak memory in MiB: CUDA max allocated since the last reset, or on the CPU the
    process's peak resident set size."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    hwm = _vm_hwm_kib()
    if hwm is not None:
        return hwm / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if maxrss > 0:  # KiB on Linux, bytes on macOS
        return maxrss / MIB if sys.platform == "darwin" else maxrss / 1024
    return psutil.Process().memory_info().rss / MIB


def reset_peak_memory(device: torch.device | str) -> bool:
    """Restart the peak from now. True when it was reset; False where the platform keeps a
    lifetime peak (then peak_memory_mb reports the process's peak so far)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # Linux: writing 5 resets the VmHWM of this process
        PROC_CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _vm_hwm_kib() is not None


# -- description --------------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def describe_device(device: torch.device | str) -> str:
    """One line: the device's name and memory."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (f"{props.name}, {props.total_memory / 2**30:.1f} GiB, "
                f"sm_{props.major}{props.minor}")
    threads = psutil.cpu_count(logical=True) or 0
    ram = psutil.virtual_memory().total / 2**30
    return f"{cpu_name()}, {threads} threads, {ram:.1f} GiB RAM"
