"""``evotui gpu``: dmon-like lines (and JSON lines) from samples, N/A for what a device does not
report, and a clear line with exit 0 when there is no GPU."""

from __future__ import annotations

import json

import pytest

from evotui.gpu import nvml
from evotui.gpu.dmon import HEADER_EVERY, stream
from evotui.gpu.nvml import GpuSample

FULL = GpuSample(index=0, name="H100", util_pct=45.0, mem_util_pct=12.0, mem_used_mib=10240.0,
                 mem_total_mib=81559.0, temp_c=54.0, power_w=215.3, power_limit_w=700.0,
                 sm_clock_mhz=1980.0, mem_clock_mhz=2619.0)
BARE = GpuSample(index=1)  # a device that reports nothing


class Fake:
    """A sampler, a clock and a sleep that record what the stream asked for."""

    def __init__(self, samples=(FULL, BARE), interrupt_after: int | None = None):
        self.samples, self.interrupt_after = list(samples), interrupt_after
        self.now, self.calls, self.slept, self.lines = 1_700_000_000.0, 0, [], []

    def sample(self):
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        self.now += 0.25  # sampling takes a quarter of a second
        return self.samples

    def sleep(self, s):
        self.slept.append(s)
        self.now += s

    def run(self, **kw):
        return stream(write=self.lines.append, sampler=self.sample,
                      available=lambda: (True, "2 GPUs"), sleep=self.sleep,
                      clock=lambda: self.now, **kw)


def test_rows_and_na():
    fake = Fake()
    assert fake.run(interval=1.0, count=1) == 0
    head, units, full, bare = fake.lines
    assert head.startswith("#") and "sm" in head and "fb used/total" in head
    assert "power/limit" in head and "sm clk" in head and "mem clk" in head
    assert units.startswith("#") and "MiB" in units and "MHz" in units
    assert full.split()[1:] == ["0", "45", "12", "10240/81559", "54", "215/700", "1980", "2619"]
    assert bare.split()[1:] == ["1"] + ["N/A"] * 7
    assert fake.slept == []  # one sample: no wait after it


def test_header_repeats_and_interval_is_kept():
    fake = Fake()
    count = HEADER_EVERY // 2 + 1  # two GPUs: one sample past the first HEADER_EVERY lines
    fake.run(interval=2.0, count=count)
    heads = [i for i, line in enumerate(fake.lines) if line.startswith("#")]
    assert heads == [0, 1, 2 + HEADER_EVERY, 3 + HEADER_EVERY]
    assert len(fake.lines) == 2 * count + 4
    assert fake.slept == [pytest.approx(1.75)] * (count - 1)  # interval minus sampling time


def test_json_lines():
    fake = Fake()
    fake.run(interval=0.5, count=2, json_lines=True)
    rows = [json.loads(line) for line in fake.lines]
    assert [r["gpu"] for r in rows] == [0, 1, 0, 1]
    assert rows[0]["fb_used_mib"] == 10240.0 and rows[0]["power_limit_w"] == 700.0
    assert rows[0]["name"] == "H100" and rows[2]["time"] > rows[0]["time"]
    assert rows[1]["sm_pct"] is None and rows[1]["temp_c"] is None


def test_ctrl_c_ends_quietly():
    fake = Fake(interrupt_after=3)
    assert fake.run(interval=1.0) == 0  # no count: until interrupted
    assert len([line for line in fake.lines if not line.startswith("#")]) == 6


def test_no_gpu_says_why():
    lines: list[str] = []
    assert stream(write=lines.append, available=lambda: (False, "no NVIDIA driver"),
                  sampler=lambda: pytest.fail("sampled without a GPU")) == 0
    assert lines == ["evotui gpu: no GPU to monitor: no NVIDIA driver"]
    lines.clear()
    stream(json_lines=True, write=lines.append, available=lambda: (False, "no NVIDIA driver"))
    assert json.loads(lines[0]) == {"gpu": None, "available": False,
                                    "reason": "no NVIDIA driver"}


def test_the_real_command(run_cli):
    ok, why = nvml.available()
    code, out, err = run_cli("gpu", "--count", "1", "--interval", "0.1")
    assert code == 0, err
    if ok:  # a GPU machine: a header and one line per GPU
        rows = [line for line in out.splitlines() if not line.startswith("#")]
        assert len(rows) == len(nvml.sample()) >= 1
    else:
        assert out.strip() == f"evotui gpu: no GPU to monitor: {why}"


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_bad_interval(run_cli, value):
    code, _, err = run_cli("gpu", "--interval", value, "--count", "1")
    assert code == 2 and "--interval" in err
