"""End to end in a real terminal: ``evotui tui`` in tmux, read with ``capture-pane``; ``p`` on
a running candidate shows in ``evotui status --json``, then ``r``, then ``q`` and "stop" end
the process with the run resumable. And ``evotui attach`` on a headless run: the engine stopped
with SIGTERM shows as ``stopped`` on the status line. A private tmux server (its own socket),
always killed."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
# what the panes inherit: no COLUMNS / LINES (something under pytest sets 80x24, which the app
# would take over the pane's real size)
PANE_ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
TITLES = ("─ Population ─", "─ Loss ─", "─ GPU ─", "─ Log ─")


def wait_for(what: str, check, timeout: float = 90.0, poll: float = 0.25, shown=None):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (
                f"; the screen:\n{shown()}" if shown else ""))
        time.sleep(poll)


def test_tui_in_tmux_pause_resume_quit(tmp_path, token_cache, run_cli):
    sock = tmp_path / "tmux.sock"
    run_dir = tmp_path / "run"
    exit_file = tmp_path / "exit-code"

    def tmux(*args: str) -> str:
        return subprocess.run([TMUX, "-S", str(sock), *args], capture_output=True, text=True,
                              check=True, timeout=30, env=PANE_ENV).stdout

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", "evotui")

    def counts() -> dict[str, int]:
        code, out, err = run_cli("status", run_dir, "--json")
        assert code == 0, err
        return json.loads(out)["counts"]

    command = (f"cd {shlex.quote(str(ROOT))} && EVOTUI_CACHE={shlex.quote(str(token_cache))} "
               f"{shlex.quote(sys.executable)} -m evotui tui configs/tiny.yaml --generations 3 "
               f"--steps 20 --device cpu --run-dir {shlex.quote(str(run_dir))} --population 2 "
               f"--eval-batches 1; echo $? > {shlex.quote(str(exit_file))}; sleep 60")
    tmux("new-session", "-d", "-s", "evotui", "-x", "160", "-y", "48", command)
    try:
        shown = wait_for("the four panes and a running candidate", lambda: (
            s if all(t in (s := screen()) for t in TITLES) and "[engine in this app]" in s
            and re.search(r"c0000\s+running", s) else None), shown=screen)
        assert re.search(r"c0001\s+queued", shown)

        tmux("send-keys", "-t", "evotui", "p")  # the cursor starts on c0000
        wait_for("c0000 paused in evotui status", lambda: counts()["paused"] == 1)
        wait_for("c0000 paused on screen", lambda: re.search(r"c0000\s+paused", screen()))

        tmux("send-keys", "-t", "evotui", "r")
        wait_for("c0000 resumed", lambda: counts()["paused"] == 0)

        tmux("send-keys", "-t", "evotui", "q")
        wait_for("the quit question", lambda: "Quit: the run is going on" in screen())
        tmux("send-keys", "-t", "evotui", "s")
        code = wait_for("the app to exit", lambda: exit_file.exists() and exit_file.read_text())
        assert code.strip() == "0"
        assert f"evotui run --resume {run_dir}" in screen().replace("\n", "")
    finally:
        subprocess.run([TMUX, "-S", str(sock), "kill-server"], capture_output=True, timeout=30)
    final = counts()
    assert final["running"] == 0 and final["queued"] + final["done"] == 2, final
    assert "stopped (resumable with --resume)" in (run_dir / "run.log").read_text()


def test_attach_shows_a_headless_engine_stopped_by_sigterm(tmp_path, token_cache, run_cli):
    sock = tmp_path / "tmux.sock"
    run_dir = tmp_path / "run"

    def tmux(*args: str) -> str:
        return subprocess.run([TMUX, "-S", str(sock), *args], capture_output=True, text=True,
                              check=True, timeout=30, env=PANE_ENV).stdout

    def status_line() -> str:
        return tmux("capture-pane", "-p", "-t", "evotui").splitlines()[0]

    def running() -> bool:
        if not (run_dir / "run.db").exists():
            return False
        code, out, _ = run_cli("status", run_dir, "--json")
        return code == 0 and json.loads(out)["counts"].get("running", 0) > 0

    engine = subprocess.Popen(
        [sys.executable, "-m", "evotui", "run", "configs/tiny.yaml", "--generations", "3",
         "--steps", "200", "--device", "cpu", "--run-dir", str(run_dir), "--population", "2",
         "--eval-batches", "1", "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**os.environ, "EVOTUI_CACHE": str(token_cache)})
    try:
        wait_for("a candidate running headless", running)
        command = (f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m evotui "
                   f"attach {shlex.quote(str(run_dir))}; sleep 60")
        tmux("new-session", "-d", "-s", "evotui", "-x", "120", "-y", "30", command)
        wait_for("the status line says running", lambda: " running " in status_line())
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=120) == 0
        # the engine has written that it stopped: the attached app shows it within 5 s
        wait_for("the status line says stopped", lambda: " stopped " in status_line(),
                 timeout=5.0, poll=0.1, shown=status_line)
        assert "ETA" not in status_line()  # a stopped run has no ETA
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait(timeout=30)
        subprocess.run([TMUX, "-S", str(sock), "kill-server"], capture_output=True, timeout=30)
