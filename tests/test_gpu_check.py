"""scripts/gpu_check.sh in its --cpu mode: the same steps as on a GPU machine, small."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu_check.sh"


@pytest.mark.skipif(not os.environ.get("EVOTUI_GPU_CHECK_CPU"),
                    reason="about 2 minutes on 2 cores: set EVOTUI_GPU_CHECK_CPU=1 (CI does)")
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils timeout")
@pytest.mark.timeout(1800)  # the script's own limit below; the suite's 300 s is per unit test
def test_gpu_check_cpu_mode(tmp_path, token_cache) -> None:
    out = tmp_path / "check"
    env = os.environ | {"PYTHON": sys.executable, "EVOTUI_CACHE": str(token_cache)}
    proc = subprocess.run(["bash", str(SCRIPT), str(out), "--cpu"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800)
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    failed = {s["step"]: (out / f"{s['step']}.log").read_text()[-2000:]
              for s in steps if s["rc"] != 0}
    assert proc.returncode == 0 and not failed, (proc.stdout[-3000:], failed)
    assert [s["step"] for s in steps] == ["env", "pytest_gpu", "bench_attention", "scale",
                                         "bench_train", "bench_compile", "run"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["env"]["torch"]
    assert {r["pattern"] for r in summary["attention"]} >= {"none", "sliding", "local_global"}
    assert len(summary["train"]) == 2 and all(r["tokens_per_s"] > 0 for r in summary["train"])
    assert summary["compile"]["all_compiled"] and summary["compile"]["max_recompiles"] == 0
    assert (out / "run" / "run.log").is_file()
    assert "all steps passed" in (out / "summary.md").read_text()


def test_gpu_check_usage_errors(tmp_path) -> None:
    for args in ([], ["--bogus", str(tmp_path)], [str(tmp_path), "--wheels", str(tmp_path / "no")]):
        proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2, args
        assert proc.stderr.count("\n") <= 2 and "gpu_check" in proc.stderr, proc.stderr
