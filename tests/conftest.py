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


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory):
    """One token cache for the whole session: tiny's corpus is tokenised once."""
    path = tmp_path_factory.mktemp("token-cache")
    old = os.environ.get("EVOTUI_CACHE")
    os.environ["EVOTUI_CACHE"] = str(path)
    from evotui.data import prepare
    from evotui.dsl import load

    prepare(load(ROOT / "configs" / "tiny.yaml"), cache_dir=path)
    yield path
    if old is None:
        os.environ.pop("EVOTUI_CACHE", None)
    else:
        os.environ["EVOTUI_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, token_cache):
    """A finished tiny run on CPU (2 generations of 3, 4 steps): a run directory with run.db,
    frontier.json, lineage.json, run.log and checkpoints. Treat it as read-only; copy it
    (shutil.copytree) before changing anything."""
    import subprocess
    import sys

    run_dir = tmp_path_factory.mktemp("tiny-run") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "evotui", "run", str(ROOT / "configs" / "tiny.yaml"),
         "--run-dir", str(run_dir), "--generations", "2", "--steps", "4", "--population", "3",
         "--eval-batches", "1", "--device", "cpu", "--seed", "5", "--quiet"],
        capture_output=True, text=True, env={**os.environ, "EVOTUI_CACHE": str(token_cache)},
        timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


@pytest.fixture(scope="module")
def config() -> dict:
    """configs/tiny.yaml as a job's plain-data config with the shortest evaluation: what the
    executor tests (local, sharded, Ray) give their workers."""
    from evotui.dsl import load, to_data

    cfg = load(ROOT / "configs" / "tiny.yaml")
    cfg.train.eval_batches = 1
    cfg.train.passkey_eval_batches = 1
    cfg.train.log_interval = 1
    return to_data(cfg)

