"""GPU telemetry through NVML (nvidia-ml-py). Imports no torch: the TUI reads it at 1 Hz."""

from evotui.gpu.nvml import GpuProcess, GpuSample, available, sample, shutdown

__all__ = ["GpuProcess", "GpuSample", "available", "sample", "shutdown"]
