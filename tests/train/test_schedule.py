"""The lr schedule: warm-up shape, decay end values, constant, purity, apply_lr."""

from __future__ import annotations

import math

import pytest

from evotui.dsl import TrainConfig
from evotui.train.optim import build_optimizer
from evotui.train.schedule import apply_lr, lr_factor
from tests.train.test_optim import tiny_lm


def cfg(schedule: str = "cosine", warmup: int = 10, min_lr_ratio: float = 0.1) -> TrainConfig:
    return TrainConfig(lr_schedule=schedule, warmup=warmup, min_lr_ratio=min_lr_ratio)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_warmup_is_linear_from_one_over_warmup_to_one(schedule):
    c = cfg(schedule)
    ramp = [lr_factor(s, 100, c) for s in range(10)]
    assert ramp == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr_factor(10, 100, c) == pytest.approx(1.0)


def test_no_warmup_starts_at_full_lr():
    assert lr_factor(0, 100, cfg(warmup=0)) == 1.0


def test_cosine_decays_to_min_lr_ratio():
    c = cfg("cosine", warmup=10, min_lr_ratio=0.1)
    values = [lr_factor(s, 110, c) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert values[0] == pytest.approx(1.0)
    assert lr_factor(60, 110, c) == pytest.approx(0.55)  # halfway: (1 + min) / 2
    assert lr_factor(35, 110, c) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(110, 110, c) == pytest.approx(0.1)
    assert lr_factor(500, 110, c) == pytest.approx(0.1)  # past the plan: stays at the end


def test_linear_decays_to_min_lr_ratio():
    c = cfg("linear", warmup=0, min_lr_ratio=0.0)
    assert [lr_factor(s, 100, c) for s in (0, 25, 50, 100)] == pytest.approx(
        [1.0, 0.75, 0.5, 0.0])


def test_constant_after_warmup():
    c = cfg("constant", warmup=5)
    assert {lr_factor(s, 50, c) for s in range(5, 200)} == {1.0}


def test_schedule_is_a_pure_function_of_step_and_total():
    c = cfg("cosine", warmup=3)
    whole = [lr_factor(s, 40, c) for s in range(40)]
    resumed = whole[:17] + [lr_factor(s, 40, c) for s in range(17, 40)]
    assert whole == resumed


def test_warmup_longer_than_training():
    c = cfg("cosine", warmup=20, min_lr_ratio=0.1)
    assert lr_factor(4, 10, c) == pytest.approx(0.25)
    assert lr_factor(25, 10, c) == pytest.approx(0.1)


def test_bad_arguments():
    with pytest.raises(ValueError):
        lr_factor(-1, 10, cfg())
    with pytest.raises(ValueError):
        lr_factor(0, 0, cfg())


def test_apply_lr_scales_each_groups_base_lr():
    train = TrainConfig.model_validate({"lr": 1e-3, "optimizer": {"name": "muon"}})
    opt = build_optimizer(tiny_lm(), train, "cpu")
    bases = [g["base_lr"] for g in opt.param_groups]
    assert len(set(bases)) == 2  # Muon's matrices and the AdamW part
    apply_lr(opt, 0.25)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([b * 0.25 for b in bases])
    assert [g["base_lr"] for g in opt.param_groups] == bases
    del opt.param_groups[0]["base_lr"]
    with pytest.raises(KeyError, match="base_lr"):
        apply_lr(opt, 1.0)
