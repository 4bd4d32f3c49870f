"""``evotui tui`` and ``evotui attach`` as a user types them: the same flags as ``evotui run``,
and a wrong path is one line and exit 2, before any screen is drawn."""

from __future__ import annotations

import re

import typer.main

from evotui.cli import app


def _options(name: str) -> set[str]:
    command = typer.main.get_command(app).commands[name]
    return {opt for p in command.params for opt in p.opts}


def test_tui_takes_exactly_the_run_flags():
    assert _options("tui") == _options("run")


def test_attach_a_directory_without_a_run(run_cli, tmp_path):
    code, out, err = run_cli("attach", tmp_path)
    assert code == 2 and out == ""
    assert err.strip() == (f"{tmp_path}: no run.db here, so this is not a run directory "
                           "(`evotui run` starts one)")


def test_tui_with_a_missing_config(run_cli, tmp_path):
    code, _, err = run_cli("tui", tmp_path / "nope.yaml")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.match(rf"{re.escape(str(tmp_path / 'nope.yaml'))}: ", err)
