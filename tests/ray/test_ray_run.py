"""``evotui run --executor ray`` on a real local Ray cluster: a tiny search completes with a
frontier of the same shape as the local executor's, and pause and kill from a second process
reach candidates training in Ray actors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytest.importorskip("ray")

TINY = ROOT / "configs" / "tiny.yaml"


def evotui(*args: str, token_cache: Path) -> list[str]:
    return [sys.executable, "-m", "evotui", *map(str, args)]


def env(token_cache: Path) -> dict[str, str]:
    return {**os.environ, "EVOTUI_CACHE": str(token_cache), "RAY_AUTH_MODE": "disabled"}


def status(c) -> str:
    return str(getattr(c["status"], "value", c["status"]))


def test_a_ray_run_completes_like_a_local_run(ray_cluster, tiny_run, token_cache, tmp_path):
    """The same search as the session's local tiny run (2 generations of 3, 4 steps), on two
    Ray CPU slots: every candidate trains, and the frontier has the local run's shape."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        evotui("run", TINY, "--run-dir", run_dir, "--generations", "2", "--steps", "4",
               "--population", "3", "--eval-batches", "1", "--device", "cpu", "--seed", "5",
               "--quiet", "--executor", "ray", "--ray-address", ray_cluster, "--cpu-slots", "2",
               token_cache=token_cache),
        capture_output=True, text=True, env=env(token_cache), timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (run_dir / "run.log").read_text()
    assert f"executor: ray ({ray_cluster}, 1 node(s)), 2 cpu slot(s); checkpoints: shared " \
           "filesystem" in log
    ray_front = json.loads((run_dir / "frontier.json").read_text())
    local_front = json.loads((tiny_run / "frontier.json").read_text())
    assert ray_front["objectives"] == local_front["objectives"]
    assert ray_front["frontier"] and ray_front["count"] == len(ray_front["frontier"])
    shape = {k for e in local_front["frontier"] for k in e}
    for entry in ray_front["frontier"]:
        assert set(entry) == shape
        assert set(entry["metrics"]) >= set(local_front["objectives"])
        assert Path(entry["checkpoint"]).is_file()
    lineage = json.loads((run_dir / "lineage.json").read_text())
    assert lineage["count"] == len(lineage["candidates"]) == 6
    assert "failed" not in log.split("executor: ray")[1]


@pytest.mark.slow
def test_pause_and_kill_from_another_process_reach_ray_workers(ray_cluster, token_cache,
                                                                tmp_path):
    """Two long candidates in Ray actors: `evotui pause` and `evotui kill` from other processes
    pause one (checkpointed) and kill the other; SIGTERM stops the run, and --resume reopens it
    on the same cluster without being told the executor again."""
    from evotui.engine.store import RunStore

    run_dir = tmp_path / "run"
    head = subprocess.Popen(
        evotui("run", TINY, "--run-dir", run_dir, "--generations", "1", "--steps", "400",
               "--population", "2", "--eval-batches", "1", "--device", "cpu", "--quiet",
               "--executor", "ray", "--ray-address", ray_cluster, "--cpu-slots", "2",
               token_cache=token_cache),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(token_cache))
    try:
        def candidates():
            store = RunStore.open(run_dir, readonly=True)
            try:
                return store.candidates()
            finally:
                store.close()

        deadline = time.monotonic() + 300
        while True:
            assert head.poll() is None, head.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the candidates never trained"
            if (run_dir / "run.db").exists():
                cands = candidates()
                if len(cands) == 2 and all(status(c) == "running" and c["step"] >= 2
                                           for c in cands):
                    break
            time.sleep(0.5)
        paused, killed = cands[0]["id"], cands[1]["id"]
        for action, cid in (("pause", paused), ("kill", killed)):
            done = subprocess.run(evotui(action, run_dir, cid, token_cache=token_cache),
                                  capture_output=True, text=True, env=env(token_cache))
            assert done.returncode == 0, done.stderr
        while {status(c) for c in candidates()} != {"paused", "killed"}:
            assert time.monotonic() < deadline, [status(c) for c in candidates()]
            time.sleep(0.5)
        by_id = {c["id"]: c for c in candidates()}
        assert status(by_id[paused]) == "paused" and by_id[paused]["step"] < 400
        assert Path(by_id[paused]["checkpoint"]).is_file()
        assert status(by_id[killed]) == "killed"
        head.send_signal(signal.SIGTERM)
        assert head.wait(120) == 0
        again = subprocess.run(
            evotui("run", "--resume", run_dir, "--quiet", token_cache=token_cache),
            capture_output=True, text=True, env=env(token_cache), timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
        assert (run_dir / "run.log").read_text().count(f"executor: ray ({ray_cluster}") == 2
    finally:
        if head.poll() is None:
            head.kill()
