"""The worker's warm-up and the timings ``evotui bench engine`` adds up."""

from __future__ import annotations

import pytest

from evotui.bench.engine import summarise
from evotui.dsl import load, to_data
from evotui.engine import worker
from evotui.engine.jobs import Job, Warm
from tests.conftest import ROOT

TINY = ROOT / "configs" / "tiny.yaml"


def test_warm_up_prepares_the_dataset_the_first_job_then_reuses(token_cache):
    data = to_data(load(TINY))
    worker._DATASETS.clear()
    worker.warm_up(Warm(data, "cpu", str(token_cache)))
    assert len(worker._DATASETS) == 1
    warmed = next(iter(worker._DATASETS.values()))
    events: list = []
    dataset = worker.prepared(data["data"], str(token_cache), load(TINY), events.append)
    assert dataset is warmed
    assert "reusing" in events[0]["text"]


def test_a_failing_warm_up_leaves_nothing_behind_and_raises_nothing(tmp_path):
    data = to_data(load(TINY))
    data["data"]["train"] = [{"path": str(tmp_path / "missing.txt")}]
    worker._DATASETS.clear()
    worker.warm_up(Warm(data, "cpu", str(tmp_path)))  # the first job reports the error
    assert worker._DATASETS == {}


def test_a_job_reports_where_its_time_went(token_cache, tmp_path):
    data = to_data(load(TINY))
    job = Job("c0001", data, until_step=2, total_steps=4, rung=1, seed=1,
              checkpoint_path=str(tmp_path / "c0001.safetensors"), cache_dir=str(token_cache))

    class Flag:
        value = 0

    result = worker.train(job, lambda event: None, Flag(), threads=1)
    t = result["timings"]
    assert set(t) == {"startup_s", "data_s", "build_s", "load_s", "train_s", "eval_s",
                      "measure_s", "checkpoint_s"}
    assert all(v >= 0 for v in t.values())
    assert t["train_s"] == result["train_seconds"] > 0
    assert t["measure_s"] > 0 and t["checkpoint_s"] > 0  # it measured and saved
    assert result["received_at"] <= result["first_step_at"]


def test_the_summary_divides_worker_time_and_keeps_the_rest_as_other():
    jobs = [{"wall": 10.0, "timings": {"train_s": 6.0, "eval_s": 1.0, "measure_s": 1.0,
                                       "startup_s": 0.25, "checkpoint_s": 0.5}, "wait": 0.25},
            {"wall": 10.0, "timings": {"train_s": 8.0, "measure_s": 1.0}, "wait": 0.0}]
    s = summarise(jobs, [0.2, 0.4], run_wall=25.0)
    assert s["fractions"] == {"train": 0.7, "measure": 0.15, "setup": 0.025,
                              "checkpoint": 0.025, "other": 0.1}
    assert s["not_training_fraction"] == pytest.approx(0.3)
    assert s["overhead_fraction"] == pytest.approx(0.15)
    assert s["slot_idle_between_candidates_s"] == {"median": 0.3, "max": 0.4, "count": 2}
