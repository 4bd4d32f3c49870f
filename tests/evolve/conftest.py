from __future__ import annotations

import pytest

from evotui.dsl import load
from tests.conftest import ROOT

CONFIG_NAMES = ["tiny", "gpt2_124m", "scalehop_xover-68-8a93"]


def config(name: str):
    return load(ROOT / "configs" / f"{name}.yaml")


@pytest.fixture(scope="session")
def tiny():
    return config("tiny")


@pytest.fixture(scope="session")
def gpt2():
    return config("gpt2_124m")
