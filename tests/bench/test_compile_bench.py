"""``evotui bench compile`` on one small config with Dynamo's ``eager`` backend: consecutive
candidates each compile fresh, and each reports a compiled and an eager step of its own."""

from __future__ import annotations

import yaml

from evotui.bench import compile as bench
from evotui.dsl import load, to_data
from evotui.train import compiled
from tests.conftest import ROOT


def test_bench_compile_pairs_compiled_and_eager_steps(tmp_path) -> None:
    data = to_data(load(ROOT / "configs" / "tiny.yaml"))
    data["model"]["blocks"] = [data["model"]["blocks"][i] for i in (6, 1)]  # dense, MoE
    data["model"]["recurrences"] = []
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(data))
    out = bench.run([path], candidates=2, steps=1, backend="eager", batch_size=1, seq_len=64)
    assert compiled.BACKEND == "inductor"  # put back
    assert out["all_compiled"] and out["max_recompiles"] == 0 and out["eager_frames"] == 0
    rows = out["candidates"]
    assert [r["candidate"] for r in rows] == [0, 1]
    assert [r["graphs"] for r in rows] == [2, 2]  # two block structures, twice: a fresh start
    assert all(r["step_ms"] > 0 and r["eager_step_ms"] > 0 and r["compile_s"] >= 0
               for r in rows)
    assert all(r["log"] == ["compile: 2 graph(s) for 2 block(s), 0 graph break(s)"]
               for r in rows)
    (c,) = out["configs"].values()
    assert c["moe_graph_breaks"] == [0] and c["compiled_vs_eager"] > 0
