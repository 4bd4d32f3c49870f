"""The data layer without the UI: incremental store reads, the Population cells, and the GPU
pane's readings (NVML faked, or no driver at all)."""

from __future__ import annotations

import json
import os

import pynvml
import pytest
from rich.text import Text

from evotui.engine.store import RunStore
from evotui.gpu import nvml
from evotui.gpu.nvml import GpuProcess, GpuSample
from evotui.tui import cells
from evotui.tui.feed import Feed, children, lineage
from evotui.tui.gpu import History, _mib, render_reading
from evotui.tui.sampler import Reading, SystemSampler
from tests.test_gpu_nvml import FakeNVML


def test_first_poll_then_only_what_changed(fixture_run):
    store = RunStore.open(fixture_run)
    feed = Feed(store)
    first = feed.poll()
    assert first.first and list(first.candidates) == [f"c000{i}" for i in range(7)]
    assert first.latest["c0002"]["step"] == 12 and first.latest["c0002"]["kind"] == "train"
    assert "c0004" not in first.latest  # queued: no rows
    assert [e["kind"] for e in first.events][:2] == ["mutation", "start"]
    assert first.frontier == ["c0000", "c0001"]
    assert first.workers == {"cpu": {"pid": 4242, "candidate": "c0002"}}
    assert feed.info.rungs == [4, 20] and feed.info.generations == 3

    assert feed.poll().empty  # nothing new

    store.add_metrics([{"candidate": "c0002", "rung": 2, "step": s, "loss": 2.9, "lr": 1e-3,
                        "tokens": 1, "tokens_per_s": 300.0} for s in (13, 14)])
    store.update_candidate("c0002", step=14)
    store.update_candidate("c0003", status="queued")
    store.add_candidate("c0007", generation=1, spec={}, parents=["c0002"], operator="x")
    store.add_event("resume", "c0003: queued again", "c0003")
    frontier = json.loads((fixture_run / "frontier.json").read_text())
    frontier["frontier"] = frontier["frontier"][:1]
    (fixture_run / "frontier.json").write_text(json.dumps(frontier))
    up = feed.poll()
    assert sorted(up.candidates) == ["c0002", "c0003", "c0007"]
    assert [(r["candidate"], r["step"]) for r in up.metrics] == [("c0002", 13), ("c0002", 14)]
    assert up.latest["c0002"]["tokens_per_s"] == 300.0
    assert [e["text"] for e in up.events] == ["c0003: queued again"]
    assert up.frontier == ["c0000"]
    assert feed.poll().empty
    store.close()


def test_best_lineage_and_children(fixture_run):
    with RunStore.open(fixture_run, readonly=True) as store:
        feed = Feed(store)
        feed.poll()
        assert feed.best() == "c0000"  # the lowest held-out loss among finished candidates
        assert lineage(feed.candidates, "c0004") == [["c0000", "c0001"]]
        assert lineage(feed.candidates, "c0003") == [["c0001"], ["c0000"]]
        assert lineage(feed.candidates, "c0000") == []
        assert children(feed.candidates, "c0001") == ["c0003", "c0004", "c0005"]


def test_cells_format_sort_and_filter():
    assert [cells.short(v) for v in (4.12345, 123.456, 12345.6, 1.2e6, None)] == [
        "4.123", "123.5", "12.3k", "1.2M", "-"]
    assert cells.params(1_219_832) == "1.22M" and cells.params(None) == "-"
    cols = cells.columns({"ppl_code": "min", "throughput": "max"})
    c = {"id": "c0003", "generation": 2, "status": "running", "operator": "attn.rope(b4)",
         "parents": ["c0001"], "step": 7, "total_steps": 20, "rung": 1,
         "metrics": {"params_total": 2_000_000, "ppl_code": 31.25}, "device": "cuda:1"}
    row = cells.cells(c, {"loss": 3.5, "tokens_per_s": 1234.5}, True, cols, rungs=[30, 200])
    assert {k: v.plain for k, v in row.items()} == {
        "id": "c0003", "gen": "2", "status": "running", "step": "7/30 r1", "device": "cuda:1",
        "loss": "3.5", "ppl_code": "31.25", "tok_s": "1.23k", "params": "2M", "front": "★",
        "operator": "attn.rope(b4)", "parents": "c0001"}
    assert isinstance(row["status"], Text) and row["status"].style == "bold green"
    # the step counts toward the end of the candidate's own rung, not the run's last step
    assert cells.progress(dict(c, rung=2, step=45), [30, 200]) == "45/200 r2"
    assert cells.progress(dict(c, rung=0, step=0), [30, 200]) == "0/30 r0"
    assert cells.progress(c, []) == "7/20"
    # a command the engine has not answered shows instead of the status; off the GPU, no device
    pending = cells.cells(dict(c, status="paused"), None, False, cols, pending="resume")
    assert pending["status"].plain == "resume…" and pending["device"].plain == "-"
    assert cells.matches(c, "RUN rope") and cells.matches(c, "g2 cuda:1")
    assert not cells.matches(c, "paused") and not cells.matches(c, "g1")
    done = dict(c, id="c0001", status="done", metrics={"train_loss": 2.0})
    assert cells.sort_value(done, None, "loss", False) < cells.sort_value(c, {"loss": 3.5},
                                                                          "loss", False)
    assert cells.sort_value(c, None, "tok_s", False)[0] == 1  # missing: last


def test_gpu_reading_shows_every_field_and_na_for_unreadable_ones():
    full = GpuSample(0, "NVIDIA H100 80GB HBM3", 87, 40, 10 * 1024, 80 * 1024, 64, 350.5, 700,
                     1980, 2619, (GpuProcess(42, 512.0),))
    text = render_reading(Reading(gpus=[full, GpuSample(1)]), 70).plain
    assert "GPU0 NVIDIA H100 80GB HBM3" in text
    assert "87%" in text and "10.0/80.0 GiB" in text and "64°C" in text
    assert "350/700 W" in text and "SM 1980 / mem 2619 MHz" in text
    lost = text.split("GPU1")[1]  # a device NVML cannot read: every field N/A, no crash
    assert "N/A" in lost and "N/A/N/A GiB" in lost and "N/A°C" not in lost
    narrow = render_reading(Reading(gpus=[full]), 30).plain
    assert all(len(line) <= 30 for line in narrow.splitlines())


@pytest.fixture
def fresh_nvml():
    nvml.shutdown()
    yield
    nvml.shutdown()


def test_sampler_with_a_gpu_reports_our_workers_memory(fresh_nvml, monkeypatch):
    FakeNVML().install(monkeypatch)
    monkeypatch.setattr("evotui.tui.sampler._alive", lambda pid: True)
    reading = SystemSampler()({"cuda:0": {"pid": 42, "candidate": "c0003"},
                               "cuda:1": {"pid": 77, "candidate": "c0004"}})
    assert reading.notice is None and reading.gpus[0].util_pct == 87
    assert [(p.pid, p.candidate, p.mem_mib) for p in reading.procs] == [
        (42, "c0003", 512.0), (77, "c0004", None)]  # 77 is not on the device: N/A


def test_sampler_without_a_driver_shows_cpu_ram_and_a_notice(fresh_nvml, monkeypatch):
    def missing():
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", missing)
    sampler = SystemSampler()
    workers = {"cpu": {"pid": os.getpid(), "candidate": "c0001"},
               "cuda:9": {"pid": 2**22 + 12345, "candidate": "gone"}}
    reading = sampler(workers)
    assert reading.gpus == [] and reading.notice.startswith("no GPU: no NVIDIA driver")
    assert 0 <= reading.cpu_pct <= 100 and 0 < reading.ram_used_mib < reading.ram_total_mib
    [proc] = reading.procs  # the dead pid is left out
    assert proc.pid == os.getpid() and proc.mem_mib > 10
    text = render_reading(reading, 60).plain
    assert "no GPU" in text and "CPU" in text and "RAM" in text and "RSS" in text
    # a worker's CPU: measured from the reading that first saw it to the next one
    assert proc.cpu_pct is None
    sum(i * i for i in range(300_000))  # some CPU time of our own
    [again] = sampler(workers).procs
    assert again.cpu_pct is not None and again.cpu_pct >= 0
    assert "CPU N/A" in text  # the first reading: not measured yet
    assert f"RSS {_mib(again.mem_mib)} CPU {again.cpu_pct:.0f}%" in render_reading(
        Reading(procs=[again]), 80).plain


def test_gpu_history_keeps_one_sample_a_second_and_fills_the_rows_it_gets():
    history = History()
    for t, pct in ((0.0, 10.0), (0.2, 99.0), (1.0, 50.0), (2.0, 100.0)):  # 0.2: too soon
        history.add(Reading(cpu_pct=pct, ram_used_mib=1024, ram_total_mib=4096), t)
    assert list(history.series["CPU"]) == [10.0, 50.0, 100.0]
    lines = [line.plain for line in history.lines(40, 4)]  # two series, two rows each
    assert len(lines) == 4 and lines[1].startswith("CPU") and lines[3].startswith("RAM")
    assert lines[1].endswith("100%") and lines[0][12:15] == "  █"  # 10% and 50% stay low
    reading = Reading(cpu_pct=100.0, ram_used_mib=1024, ram_total_mib=4096)
    text = render_reading(reading, 40, history, height=12).plain.splitlines()
    assert len(text) == 12  # the rows the pane has, none left empty
