"""NVML sampling never raises: no driver gives (False, reason) and [], a fake device gives its
fields, and a field the device refuses reads None. The package imports no torch."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pynvml
import pytest

from evotui.gpu import nvml
from tests.conftest import ROOT


@pytest.fixture
def fresh():
    nvml.shutdown()
    yield
    nvml.shutdown()


def test_no_driver_is_a_reason_not_an_error(fresh, monkeypatch):
    def missing():
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", missing)
    ok, reason = nvml.available()
    assert not ok and "driver" in reason and "\n" not in reason
    assert nvml.sample() == []


def test_this_machine(fresh):
    ok, reason = nvml.available()
    samples = nvml.sample()
    assert isinstance(reason, str) and reason
    if not ok:
        assert samples == []
    else:
        assert samples and all(s.name for s in samples)


class FakeNVML:
    """One device: every query answers except the temperature (NotSupported)."""

    def __init__(self):
        self.calls = {"init": 0, "shutdown": 0}

    def install(self, monkeypatch):
        def init():
            self.calls["init"] += 1

        def shutdown():
            self.calls["shutdown"] += 1

        def temperature(h, sensor):
            raise pynvml.NVMLError_NotSupported()

        def procs(h):
            return [SimpleNamespace(pid=42, usedGpuMemory=512 * 2**20),
                    SimpleNamespace(pid=7, usedGpuMemory=None)]

        fakes = {
            "nvmlInit": init,
            "nvmlShutdown": shutdown,
            "nvmlDeviceGetCount": lambda: 1,
            "nvmlSystemGetDriverVersion": lambda: "999.1",
            "nvmlDeviceGetHandleByIndex": lambda i: f"handle{i}",
            "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3",
            "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=87, memory=40),
            "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(used=10 * 2**30,
                                                                 total=80 * 2**30),
            "nvmlDeviceGetTemperature": temperature,
            "nvmlDeviceGetPowerUsage": lambda h: 350_500,
            "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700_000,
            "nvmlDeviceGetClockInfo": lambda h, kind: 1980 if kind == pynvml.NVML_CLOCK_SM
            else 2619,
            "nvmlDeviceGetComputeRunningProcesses": procs,
            "nvmlDeviceGetGraphicsRunningProcesses": lambda h: [],
        }
        for name, fn in fakes.items():
            monkeypatch.setattr(pynvml, name, fn)


def test_fake_device_fields(fresh, monkeypatch):
    fake = FakeNVML()
    fake.install(monkeypatch)
    assert nvml.available() == (True, "1 GPU, driver 999.1")
    [s] = nvml.sample()
    nvml.sample()
    assert fake.calls["init"] == 1  # initialised once
    assert s.index == 0 and s.name == "NVIDIA H100 80GB HBM3"
    assert s.util_pct == 87 and s.mem_util_pct == 40
    assert s.mem_used_mib == 10 * 1024 and s.mem_total_mib == 80 * 1024
    assert s.temp_c is None  # NotSupported reads as N/A
    assert s.power_w == pytest.approx(350.5) and s.power_limit_w == 700
    assert s.sm_clock_mhz == 1980 and s.mem_clock_mhz == 2619
    assert s.processes == (nvml.GpuProcess(7, None), nvml.GpuProcess(42, 512.0))
    nvml.shutdown()
    assert fake.calls["shutdown"] == 1


def test_unreadable_device_gives_all_none(fresh, monkeypatch):
    fake = FakeNVML()
    fake.install(monkeypatch)

    def lost(*args):
        raise pynvml.NVMLError_GpuIsLost()

    for name in ("nvmlDeviceGetName", "nvmlDeviceGetMemoryInfo",
                 "nvmlDeviceGetComputeRunningProcesses",
                 "nvmlDeviceGetGraphicsRunningProcesses"):
        monkeypatch.setattr(pynvml, name, lost)
    [s] = nvml.sample()
    assert s.name is None and s.mem_used_mib is None and s.processes is None
    assert s.util_pct == 87
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lost)
    assert nvml.sample() == [nvml.GpuSample(0)]


def test_import_does_not_pull_in_torch():
    code = ("import sys, evotui.gpu; evotui.gpu.sample(); evotui.gpu.available(); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr or "evotui.gpu imported torch"
