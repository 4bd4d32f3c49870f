"""A real Ray cluster for the Ray executor's tests: ``ray start --head`` in a temporary
directory, two CPUs, ended with its process group when the session ends. Skipped without ray."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory, token_cache):
    """The address (HOST:PORT) of a two-CPU Ray head started for these tests; this process
    is connected to it."""
    import ray

    temp = Path("/tmp") / f"evotui-ray-{os.getpid()}"  # Ray's socket paths must stay short
    port = _free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    log = tmp_path_factory.mktemp("ray") / "head.log"
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a private cluster on 127.0.0.1, for tests
    env = {**os.environ, "RAY_ACCEPT_CLUSTER_DEFAULTS": "1", "EVOTUI_CACHE": str(token_cache)}
    with open(log, "wb") as out:
        head = subprocess.Popen(
            [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
             "--num-gpus=0", f"--temp-dir={temp}", "--include-dashboard=false",
             "--node-ip-address=127.0.0.1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no Ray head at {address}: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        try:
            os.killpg(head.pid, signal.SIGTERM)  # the head and every process it started
            head.wait(5)  # `ray start --block` took the whole 30 s it was once given
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
