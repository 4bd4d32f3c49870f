"""A full disk (ENOSPC, injected) during a checkpoint save, an export or a store write: the
candidate or the run stops with the reason, nothing committed is damaged, and a resume once
space is back finishes the run without losing or repeating a finished candidate."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3

import pytest

from evotui.engine import integrity
from evotui.engine.events import Failed
from evotui.engine.worker import one_line
from evotui.errors import UserError
from evotui.train import checkpoint
from tests.engine.test_engine_units import InstantExecutor, engine_with, metrics
from tests.train.test_optim import tiny_lm

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def done(cid):
    return "done", metrics(int(cid[1:]))


def resumed(eng):
    """A second engine on the same store and options, as `evotui run --resume` makes one."""
    from evotui.engine.engine import Engine

    return Engine(eng.cfg, eng.options, InstantExecutor(done), eng.store, eng.rungs)


def test_a_checkpoint_save_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, tiny_lm(seed=0), meta={"step": 1})
    before = path.read_bytes()

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"the first blocks")
        raise ENOSPC

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(OSError) as caught:
        checkpoint.save(path, tiny_lm(seed=1), meta={"step": 2})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c.safetensors"]
    reason = one_line(caught.value)  # what the worker reports to the engine
    assert integrity.machine_fault(reason) == "no space left on device"


class DiskFullOnce(InstantExecutor):
    """c0001's worker fails its checkpoint save with ENOSPC, once."""

    def __init__(self, outcome):
        super().__init__(outcome)
        self.full = True

    def submit(self, job):
        if job.candidate_id == "c0001" and self.full:
            self.full = False
            self.submitted.append(job)
            self._emit(job.candidate_id, Failed(
                reason=f"OSError: [Errno 28] No space left on device: '{job.checkpoint_path}'",
                exitcode=1))
            return
        super().submit(job)


def test_a_worker_on_a_full_disk_stops_the_run_and_resume_finishes_it(tmp_path):
    eng = engine_with(tmp_path, done)
    eng.executor = DiskFullOnce(done)
    with pytest.raises(UserError) as stop:  # the run ends as on the engine's own full disk
        asyncio.run(eng.run(1))
    assert stop.value.exit_code == 1 and "no space left on device" in stop.value.render()
    assert "--resume" in stop.value.render()
    assert eng.stopping  # the run stopped with the reason, it did not train on
    c1 = eng.store.candidate("c0001")
    assert c1.status == "queued" and not c1.error  # not failed: the machine's fault
    log = [e["text"] for e in eng.store.events()]
    assert any("no space left on device" in t and "--resume" in t for t in log)
    assert eng.store.engine_state().state == "stopped"
    again = resumed(eng)
    asyncio.run(again.run(1))
    cands = again.store.candidates()
    assert all(c.status == "done" for c in cands), [(c.id, c.status) for c in cands]
    assert not any(c.status == "failed" for c in cands)


def test_an_export_on_a_full_disk_stops_the_run_in_one_line_and_loses_nothing(
        tmp_path, monkeypatch):
    eng = engine_with(tmp_path, done)
    real_fsync = os.fsync
    armed = {"on": True}

    def fsync(fd):
        if armed["on"]:
            raise ENOSPC
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)  # every atomic file write hits a full disk
    with pytest.raises(UserError) as caught:
        asyncio.run(eng.run(1))
    stop = caught.value
    assert stop.exit_code == 1 and "no space left on device" in stop.render()
    assert "--resume" in stop.render() and stop.render().count("\n") == 0
    run_dir = eng.options.run_dir
    assert not [n for n in os.listdir(run_dir) if n.endswith(".tmp")]  # no half files
    finished = {c.id for c in eng.store.candidates() if c.status == "done"}
    assert finished  # a result is committed before the export that failed
    rungs_done = {(c.id, c.rung) for c in eng.store.candidates() if c.status == "done"}
    armed["on"] = False
    again = resumed(eng)
    asyncio.run(again.run(1))
    after = {c.id: c for c in again.store.candidates()}
    assert finished <= {i for i, c in after.items() if c.status == "done"}
    assert all(c.status == "done" for c in after.values())
    assert (run_dir / "frontier.json").is_file()
    second = {(j.candidate_id, j.rung) for j in again.executor.submitted}
    assert not rungs_done & second  # no finished rung is trained again


def test_a_store_write_on_a_full_disk_stops_the_run_in_one_line(tmp_path, monkeypatch):
    eng = engine_with(tmp_path, done)
    real = type(eng.store).update_candidate
    calls = {"n": 0}

    def update(self, cid, **fields):
        calls["n"] += 1
        if calls["n"] == 3:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, cid, **fields)

    monkeypatch.setattr(type(eng.store), "update_candidate", update)
    with pytest.raises(UserError) as caught:
        asyncio.run(eng.run(1))
    assert caught.value.exit_code == 1
    assert "database or disk is full" in caught.value.render()
    monkeypatch.setattr(type(eng.store), "update_candidate", real)
    again = resumed(eng)
    asyncio.run(again.run(1))
    assert all(c.status == "done" for c in again.store.candidates())


def test_the_cli_says_a_machine_fault_in_one_line(monkeypatch, run_cli, tmp_path):
    from evotui.engine.store import RunStore

    def boom(*a, **k):
        raise ENOSPC

    monkeypatch.setattr(RunStore, "open", boom)
    code, out, err = run_cli("status", tmp_path)
    assert code == 1 and err.count("\n") == 1 and "no space left on device" in err
    assert "internal error" not in err
