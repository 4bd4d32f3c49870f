from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
ANCHORS = ROOT.parent / "shared" / "reference" / "anchor-configs"


@pytest.fixture
def run_cli(capsys):
    """Run the evotui CLI in-process; return (exit code, stdout, stderr)."""
    from evotui.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out = capsys.readouterr()
        code = exc.value.code
        return (code if isinstance(code, int) else 1), out.out, out.err

    return run
