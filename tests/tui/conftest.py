"""A stored run whose screen is the same on every machine: fixed numbers, fixed times (shown in
UTC), and a GPU pane fed by a fixed reading. Candidates of every status, train and held-out
rows, events of several kinds and a frontier.json."""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from evotui.engine.exports import write_frontier
from evotui.engine.store import RunStore
from evotui.tui.sampler import Proc, Reading, fixed
from tests.conftest import ROOT

T0 = 1_795_000_000.0  # a fixed moment; events are stamped from it
NOW = T0 + 605.0  # the app's clock in tests: the run is 10 minutes old, its newest write 5 s
OBJECTIVES = {"passkey_acc": "max", "ppl_code": "min", "ppl_math": "min", "ppl_text": "min",
              "throughput": "max"}
READING = Reading(notice="no GPU: no NVIDIA driver (test)", cpu_pct=37.0, cpu_count=2,
                  ram_used_mib=3 * 1024, ram_total_mib=8 * 1024,
                  procs=[Proc(4242, "c0002", "cpu", 512.0)])
# id, generation, parents, operator, status, rung, step, final metrics (or None)
CANDIDATES = [
    ("c0000", 0, [], "seed", "done", 2, 20, (3.10, 22.0, 36.5, 29.3, 0.25, 221.0)),
    ("c0001", 0, ["c0000"], "ffn.activation(block b6: swiglu -> relu)", "done", 1, 4,
     (4.70, 110.2, 113.3, 139.4, 0.0, 419.0)),
    ("c0002", 1, ["c0000"], "attn.kv_groups(block b6: kv_groups 2 -> 1)", "running", 2, 12,
     None),
    ("c0003", 1, ["c0001"], "attn.rope(block b4: rope linear -> ntk)", "paused", 1, 2, None),
    ("c0004", 1, ["c0000", "c0001"], "crossover(a blocks 0..3 + b blocks 4..6)", "queued", 0,
     0, None),
    ("c0005", 1, ["c0001"], "ssm.d_state(block b2: 16 -> 32)", "failed", 1, 1, None),
    ("c0006", 1, ["c0000"], "moe.experts(block b1: 8 -> 4)", "killed", 1, 3, None),
]
EVENTS = [
    ("mutation", "c0001 <- c0000: ffn.activation(block b6: swiglu -> relu)", "c0001"),
    ("start", "c0000 rung 1 on cpu (starts fresh) to step 4", "c0000"),
    ("finish", "c0000 rung 2 done: ppl_code 22, ppl_math 36.5, ppl_text 29.3", "c0000"),
    ("promotion", "c0000 promoted to rung 2", "c0000"),
    ("crossover", "c0004 <- c0000 x c0001: crossover(a blocks 0..3 + b blocks 4..6)",
     "c0004"),
    ("failure", "c0005 failed: worker exited with code 1", "c0005"),
    ("pause", "c0003: pausing at the next step boundary", "c0003"),
    ("kill", "c0006 killed: killed", "c0006"),
    ("start", "c0002 rung 2 on cpu (continues from its checkpoint) to step 20", "c0002"),
]


def _loss(step: int, scale: float) -> float:
    return round(2.5 + scale * math.exp(-step / 6.0), 4)


def make_run(run_dir: Path) -> Path:
    """Write the fixed run into ``run_dir`` (which must not hold one)."""
    cfg = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    spec = cfg["model"]
    store = RunStore.create(run_dir, yaml.safe_dump(cfg), {"name": "fixture"})
    store.set_state("objectives", OBJECTIVES)
    store.set_state("rungs", {"steps": [4, 20]})
    store.set_state("options", {})
    store.set_state("workers", {"cpu": {"pid": 4242, "candidate": "c0002"}})
    store.set_state("created", T0)
    store.set_state("engine_state", {"state": "running", "pid": 4241, "since": T0,
                                     "heartbeat": T0 + 600})
    rows = []
    for i, (cid, gen, parents, op, status, rung, step, final) in enumerate(CANDIDATES):
        metrics = {"params_total": 1_200_000 + 10_000 * i, "layers": 7}
        if final is not None:
            loss, code, math_, text, passkey, tput = final
            metrics |= {"loss": loss, "ppl_code": code, "ppl_math": math_, "ppl_text": text,
                        "passkey_acc": passkey, "throughput": tput, "train_loss": loss + 0.2}
        store.add_candidate(cid, generation=gen, spec=spec | {"name": f"tiny-{cid}"},
                            parents=parents, operator=op, status=status, rung=rung, step=step,
                            total_steps=20, metrics=metrics, device="cpu",
                            checkpoint=f"checkpoints/{cid}.safetensors")
        if status == "failed":
            store.update_candidate(cid, error="worker exited with code 1")
        scale = 3.0 + 0.5 * i
        for s in range(1, step + 1):
            rows.append({"candidate": cid, "rung": 1 if s <= 4 else 2, "step": s,
                         "loss": _loss(s, scale), "lr": 0.002, "tokens": 1024 * s,
                         "tokens_per_s": 200.0 + 10 * i, "time": T0 + s})
            if s in (12, 20):  # c0001 (4 steps) has only its final held-out loss
                rows.append({"candidate": cid, "rung": 1 if s <= 4 else 2, "step": s,
                             "loss": _loss(s, scale) + 0.15, "kind": "eval", "time": T0 + s})
    store.add_metrics(rows)
    for kind, text, cid in EVENTS:
        store.add_event(kind, text, cid)
    write_frontier(store, run_dir / "frontier.json", OBJECTIVES, ["c0000", "c0001"])
    store.close()
    with sqlite3.connect(run_dir / "run.db") as db:  # event times shown on screen: fixed
        db.execute("UPDATE events SET time = ? + id * 61", (T0,))
        db.execute("UPDATE candidates SET created = ?, updated = ? + rowid", (T0, T0 + 590))
    return run_dir


@pytest.fixture
def fixture_run(tmp_path, monkeypatch) -> Path:
    """A fresh copy of the fixed run, with the local time zone set to UTC."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield make_run(tmp_path / "run")
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def sampler():
    return fixed(READING)


def clock() -> float:
    """The app's clock in tests (a fixed moment: what the status line says never moves)."""
    return NOW
