"""``evotui bench tui`` reports sane numbers (no timing assertions), and the app's attach path
never imports torch (so attaching over SSH starts at once)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_tui_json(run_cli):
    code, out, err = run_cli("bench", "tui", "--seconds", "2", "--candidates", "6", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["candidates"] == 6 and r["rate"] == 10.0 and 1.5 < r["seconds"] < 10
    assert r["refreshes"] >= 2  # the app polls twice a second
    assert 0 < r["rows_shown"] <= r["rows_written"]  # it showed rows the writer wrote
    for key in ("refresh_ms", "read_ms", "apply_ms", "paint_ms"):
        s = r[key]
        assert 0 <= s["p50"] <= s["p95"] <= s["max"], (key, s)
    assert r["refresh_ms"]["p95"] >= r["read_ms"]["p50"]  # a refresh includes its read
    assert 0 < r["cpu_pct_of_one_core"] < 100 * 64 and r["cpu_ms_per_refresh"] > 0
    assert r["watched"].startswith("c")  # the cursor stayed on a candidate that trains
    assert len(r["load_avg"]) == 2 and min(r["load_avg"]) >= 0


ATTACH = """
import asyncio, sys
import evotui.cli  # the command line's own imports, as `evotui attach` runs them
from evotui.tui.app import EvoApp
from evotui.tui.launch import attach

async def main():
    app = EvoApp(sys.argv[1], readonly=True)
    async with app.run_test() as pilot:
        while not app.timings:
            await pilot.pause(0.05)
        assert app.feed.candidates, "no candidates shown"

asyncio.run(main())
heavy = [m for m in ("torch", "numpy", "evotui.train", "evotui.model") if m in sys.modules]
sys.exit(f"imported {heavy}" if heavy else 0)
"""


def test_attach_never_imports_torch(fixture_run):
    proc = subprocess.run([sys.executable, "-c", ATTACH, str(fixture_run)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-500:]


INAPP = """
import sys
from pathlib import Path

import evotui.commands.tui, evotui.tui.app, evotui.tui.launch  # noqa: F401, E401
from evotui.engine.runner import DEFAULT_CONFIG, RunFlags, open_run

engine, total = open_run(RunFlags(config=None, run_dir=Path(sys.argv[1]), device="cpu",
                                  population=2), DEFAULT_CONFIG)
heavy = [m for m in ("torch", "evotui.train.trainer", "evotui.model") if m in sys.modules]
sys.exit(f"imported {heavy}" if heavy else 0)
"""


def test_the_in_app_engine_opens_its_run_without_torch(tmp_path, token_cache):
    """`evotui tui --device cpu`: the app's process checks the data and plans the run without
    torch (training happens in worker processes), so the app appears at once."""
    proc = subprocess.run([sys.executable, "-c", INAPP, str(tmp_path / "run")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-500:]
    assert (tmp_path / "run" / "run.db").is_file()
