"""``evotui bench faults``: its figures are read from the store and the exports as they are
(a lost candidate, a rung recorded twice, an export that disagrees are each counted), and a
case's expectations decide its outcome."""

from __future__ import annotations

import asyncio
import json
import os

from evotui.bench import faults
from tests.engine.test_engine_units import engine_with, metrics


def finished_run(tmp_path):
    eng = engine_with(tmp_path, lambda cid: ("done", metrics(int(cid[1:]))))
    asyncio.run(eng.run(1))
    eng.store.close()
    return eng.options.run_dir


def test_figures_read_from_a_run(tmp_path):
    run_dir = finished_run(tmp_path)
    cands = faults.candidates(run_dir)
    done = faults.finished(cands)
    assert set(done) == set(cands) and faults.duplicates(run_dir) == 0
    assert faults.inconsistent_exports(run_dir) == []
    assert faults.lost(done, done) == []
    assert faults.lost({"c0000": 2, **done}, {**done, "c0000": 1}) == ["c0000"]  # lower rung
    assert faults.lost(done, {}) == sorted(done)


def test_a_rung_recorded_twice_and_a_stale_export_are_counted(tmp_path):
    import sqlite3

    run_dir = finished_run(tmp_path)
    conn = sqlite3.connect(run_dir / "run.db")
    text = conn.execute("SELECT text FROM events WHERE kind = 'finish' LIMIT 1").fetchone()[0]
    conn.execute("INSERT INTO events (time, kind, candidate, text) VALUES (0, 'finish', NULL, ?)",
                 (text,))
    conn.commit()
    conn.close()
    assert faults.duplicates(run_dir) == 1
    frontier = json.loads((run_dir / "frontier.json").read_text())
    frontier["frontier"] = frontier["frontier"][1:] if len(frontier["frontier"]) > 1 else []
    (run_dir / "frontier.json").write_text(json.dumps(frontier))
    assert any("frontier.json lists" in p for p in faults.inconsistent_exports(run_dir))


def test_a_failed_expectation_fails_the_report(monkeypatch, tmp_path):
    def passing(tiny, trials):
        case = faults.Case("passing")
        case.expect("holds", True)
        return case

    def failing(tiny, trials):
        case = faults.Case("failing", figures={"lost": 1})
        case.expect("nothing lost", False, ["c0001"])
        return case

    monkeypatch.setattr(faults, "all_cases", lambda: {"passing": passing, "failing": failing})
    report = faults.run(1, tmp_path)
    assert not report["ok"] and report["failed_expectations"] == ["failing: nothing lost"]
    assert report["totals"]["lost"] == 1 and report["cases"]["passing"]["ok"]
    report = faults.run(1, tmp_path, only=["passing"])
    assert report["ok"] and list(report["cases"]) == ["passing"]


def test_session_members_sees_a_live_process_and_not_after_it_ends():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            start_new_session=True)
    try:
        assert proc.pid in faults.session_members(proc.pid)
    finally:
        faults.kill_group(proc.pid, 9)
        proc.wait()
    assert faults.orphans(proc.pid, grace_s=0) == []
    assert os.getpid() not in faults.session_members(proc.pid)


def test_the_bad_init_checkpoint_case_passes(tmp_path):
    report = faults.run(1, tmp_path, only=["bad_init_checkpoint"])
    case = report["cases"]["bad_init_checkpoint"]
    assert report["ok"], case
    assert [r["exit"] for r in case["results"]] == [2, 2]
