"""The engine end to end on CPU: a tiny run whose frontier all trained; kill -9 then --resume
loses nothing; pause, resume and kill from a second process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from evotui.engine.store import RunStore
from evotui.errors import UserError
from tests.conftest import ROOT

TINY = ROOT / "configs" / "tiny.yaml"
SMALL = ["--population", "2", "--eval-batches", "1", "--device", "cpu", "--seed", "3"]


@pytest.fixture
def cache(token_cache):
    return token_cache  # tiny's corpus, tokenised once for the session and every worker


def wait_for(predicate, timeout=90.0, every=0.3):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def candidates(run_dir, status=None):
    if not (run_dir / "run.db").exists():
        return []
    try:
        store = RunStore.open(run_dir, readonly=True)
    except UserError as e:  # the run is being created this instant (no schema yet)
        if "schema version 0" in str(e):
            return []
        raise
    try:
        return store.candidates(status)
    finally:
        store.close()


def latest_metrics(run_dir, cid):
    with RunStore.open(run_dir, readonly=True) as store:
        return store.latest_metrics(cid)


def spawn_run(run_dir, *args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "evotui", "run", str(TINY), "--run-dir", str(run_dir), *SMALL,
         *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        start_new_session=True)


def test_tiny_run_end_to_end(run_cli, cache, tmp_path):
    run_dir = tmp_path / "run"
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    decoys = [ckpts / "notes.safetensors", ckpts / "c0001.safetensors",
              ckpts / "other-c0001.safetensors", tmp_path / "run-c0001.safetensors"]
    # not this run's checkpoints (another run's, a stray file): clean-up never deletes them
    for d in decoys:
        d.write_text("keep me")
    code, out, err = run_cli("run", TINY, "--run-dir", run_dir, "--generations", "2",
                             "--steps", "4", *SMALL, "--quiet", "--checkpoint-dir", ckpts,
                             "--cleanup-old-checkpoints")
    assert code == 0, err
    assert all(d.read_text() == "keep me" for d in decoys)
    everyone = candidates(run_dir)
    assert len(everyone) == 4 and {c["generation"] for c in everyone} == {0, 1}
    frontier = json.loads((run_dir / "frontier.json").read_text())
    assert frontier["frontier"]
    for entry in frontier["frontier"]:
        assert entry["status"] in ("done", "stopped")
        assert entry["checkpoint"] and os.path.isfile(entry["checkpoint"])  # kept
        assert entry["metrics"]["ppl_code"] > 1 and entry["metrics"]["throughput"] > 0
    for c in everyone:  # the store and the directory agree on what clean-up removed
        on_disk = list(ckpts.glob(f"run-*-{c['id']}.safetensors"))
        assert len(on_disk) == bool(c["checkpoint"]), c["id"]
    lineage = json.loads((run_dir / "lineage.json").read_text())
    assert lineage["count"] == 4
    gen1 = [c for c in everyone if c["generation"] == 1]
    assert all(c["parents"] for c in gen1)
    log = (run_dir / "run.log").read_text()
    for word in ("[mutation]", "[start]", "[finish]", "[promotion]"):
        assert word in log, word
    code, out, _ = run_cli("status", run_dir, "--json")
    status = json.loads(out)
    assert code == 0 and status["total"] == 4 and not status["running"]
    code, out, _ = run_cli("frontier", run_dir)
    assert code == 0 and "frontier" in out


def test_kill_9_then_resume_loses_nothing(run_cli, cache, tmp_path):
    run_dir = tmp_path / "crash"
    proc = spawn_run(run_dir, "--generations", "2", "--steps", "4")
    try:
        finished = wait_for(lambda: [c for c in candidates(run_dir) if c["status"] in
                                     ("done", "stopped") and c["rung"] >= 1])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {c["id"]: (c["status"], c["metrics"]) for c in finished}
    code, _, err = run_cli("run", "--resume", run_dir, "--device", "cpu", "--quiet")
    assert code == 0, err
    after = {c["id"]: c for c in candidates(run_dir)}
    assert len(after) == 4
    for cid, (status, metrics) in before.items():
        if after[cid]["rung"] == 1:  # not promoted since: untouched
            assert after[cid]["status"] == status and after[cid]["metrics"] == metrics
    assert all(c["status"] in ("done", "stopped") for c in after.values())


def test_pause_resume_kill_from_a_second_process(run_cli, cache, tmp_path):
    run_dir = tmp_path / "steer"
    proc = spawn_run(run_dir, "--generations", "1", "--steps", "400", "--population", "3")
    try:
        first = wait_for(lambda: candidates(run_dir, "running"))[0]["id"]
        wait_for(lambda: latest_metrics(run_dir, first))
        assert run_cli("pause", run_dir, first)[0] == 0
        wait_for(lambda: [c for c in candidates(run_dir) if c["id"] == first
                          and c["status"] == "paused"], timeout=60)
        assert run_cli("resume", run_dir, first)[0] == 0
        wait_for(lambda: [c for c in candidates(run_dir) if c["id"] == first
                          and c["status"] in ("queued", "running")], timeout=60)
        second = [c["id"] for c in candidates(run_dir) if c["id"] != first][0]
        assert run_cli("kill", run_dir, second)[0] == 0
        wait_for(lambda: [c for c in candidates(run_dir) if c["id"] == second
                          and c["status"] == "killed"], timeout=60)
        code, _, err = run_cli("kill", run_dir, "c9999")
        assert code == 2 and "c9999" in err
        code, _, err = run_cli("pause", run_dir, second)  # refused at once: nothing can act
        assert code == 2 and "cannot pause a killed candidate" in err
        assert not RunStore.open(run_dir).pending_commands(second)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_sigterm_to_the_process_group_pauses_and_loses_nothing(run_cli, cache, tmp_path):
    """What `timeout`, systemd and Slurm do: SIGTERM to every process of the run. Workers
    ignore it; the engine pauses them at their next step and stops; nothing is failed, and the
    run directory is free for --resume (a second engine meanwhile is refused)."""
    run_dir = tmp_path / "term"
    proc = spawn_run(run_dir, "--generations", "1", "--steps", "400", "--population", "2")
    try:
        first = wait_for(lambda: candidates(run_dir, "running"))[0]["id"]
        wait_for(lambda: latest_metrics(run_dir, first))
        code, _, err = run_cli("run", "--resume", run_dir, "--device", "cpu", "--quiet")
        assert code == 2 and f"pid {proc.pid}" in err  # the live engine holds the directory
        assert err.count("\n") == 1, err  # refused before preparing data: one line, no more
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    everyone = {c["id"]: c for c in candidates(run_dir)}
    assert not [c for c in everyone.values() if c["status"] == "failed"], everyone
    assert everyone[first]["status"] == "queued" and everyone[first]["step"] > 0
    assert os.path.isfile(everyone[first]["checkpoint"])  # it continues from there
    with RunStore.open(run_dir, readonly=True) as store:
        assert store.engine_state().state == "stopped"
