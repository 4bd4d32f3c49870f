from __future__ import annotations

import os
from pathlib import Path

import pytest

# The tests never reach the network: no Hugging Face hub, no telemetry.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_var, "1")

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
