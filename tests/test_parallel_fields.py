"""``train.parallel`` and ``train.shards``: validated with the field and the fix named, kept
through a round trip, and turned into the FSDP ranks a candidate trains on
(``evotui.dsl.memory.shards``), which ``evotui validate`` prints."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from evotui.dsl import load, loads, memory, to_data
from evotui.errors import UserError
from tests.conftest import ROOT

TINY = ROOT / "configs" / "tiny.yaml"


def with_train(**train) -> str:
    data = to_data(load(TINY))
    data["train"].update(train)
    return yaml.safe_dump(data)


@pytest.mark.parametrize(("train", "message"), [
    ({"parallel": "fsdp"}, "train.shards: parallel: fsdp needs 2, 4 or 8 shards; set "
                           "train.shards"),
    ({"shards": 2}, "train.shards: 2 shards need parallel: fsdp; set train.parallel"),
    ({"parallel": "fsdp", "shards": 3}, "train.shards: Input should be 1, 2, 4 or 8"),
    ({"parallel": "ddp"}, "train.parallel: Input should be 'auto', 'none' or 'fsdp'"),
])
def test_bad_parallel_fields_name_the_field_and_the_fix(train, message):
    with pytest.raises(UserError, match="x.yaml:\\d+: " + message.replace("(", "\\(")):
        loads(with_train(**train), source="x.yaml")


def test_shards_must_divide_the_micro_batch():
    data = to_data(load(TINY))
    data["train"].update(parallel="fsdp", shards=8)
    data["data"]["batch_size"] = 12
    with pytest.raises(UserError, match="train.shards: each of 8 shards trains batch_size / "
                                        "shards rows; make data.batch_size \\(12\\) a multiple"):
        loads(yaml.safe_dump(data), source="x.yaml")


def test_the_fields_round_trip_and_decide_the_ranks():
    cfg = loads(with_train(parallel="fsdp", shards=4))
    again = loads(yaml.safe_dump(to_data(cfg)))
    assert (again.train.parallel, again.train.shards) == ("fsdp", 4)
    assert memory.shards(again) == 4  # whatever the slot holds
    assert memory.shards(again, capacity=1 << 40) == 4
    plain = load(TINY)
    assert plain.train.parallel == "auto"
    total = memory.training_memory(plain).total
    assert memory.shards(plain) == 1  # a CPU slot: its size is not known
    assert memory.shards(plain, capacity=10 * total) == 1  # fits one slot
    squeezed = memory.shards(plain, capacity=int(0.7 * total))
    assert squeezed > 1  # too big for one slot: the fewest shards whose share fits
    assert (memory.training_memory(plain, shards=squeezed).total
            <= memory.HEADROOM * int(0.7 * total))
    none = loads(with_train(parallel="none"))
    assert memory.shards(none, capacity=int(0.7 * total)) == 1


def test_auto_shards_divide_the_micro_batch():
    data = to_data(load(TINY))
    data["data"]["batch_size"] = 6  # 2 divides it, 4 does not
    cfg = loads(yaml.safe_dump(data))
    four = memory.training_memory(cfg, shards=4).total
    two = memory.training_memory(cfg, shards=2).total
    between = int((four + two) / 2 / memory.HEADROOM)  # 4 shards would fit, 2 would not
    assert memory.shards_needed(cfg, between) is None  # never 4: 6 rows do not split in 4
    assert memory.shards_needed(cfg, int(two / memory.HEADROOM) + 1) == 2


def test_validate_prints_the_shards_it_will_use(tmp_path):
    path = tmp_path / "fsdp.yaml"
    path.write_text(with_train(parallel="fsdp", shards=2))
    out = subprocess.run([sys.executable, "-m", "evotui", "validate", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert "training memory per each of 2 FSDP ranks" in out
    assert "parallel: fsdp, 2 shards (train.shards): 2 slots of one node at once" in out
    out = subprocess.run([sys.executable, "-m", "evotui", "validate", str(TINY)],
                         capture_output=True, text=True, check=True).stdout
    assert "parallel: auto: one slot per candidate" in out


def test_train_refuses_an_fsdp_config_it_cannot_shard(run_cli, tmp_path):
    path = tmp_path / "fsdp.yaml"
    path.write_text(with_train(parallel="fsdp", shards=2))
    code, _, err = run_cli("train", path, "--device", "cpu", "--steps", "2")
    assert code == 2 and "train.parallel" in err and "evotui run" in err
    assert err.count("\n") == 1


def test_run_refuses_more_shards_than_its_slots_before_making_a_run(run_cli, tmp_path):
    path = tmp_path / "fsdp.yaml"
    path.write_text(with_train(parallel="fsdp", shards=4))
    run = tmp_path / "run"
    code, _, err = run_cli("run", path, "--device", "cpu", "--cpu-slots", "2",
                           "--run-dir", run)
    assert code == 2 and "train.shards" in err and "--cpu-slots" in err
    assert err.count("\n") == 1 and not run.exists()
