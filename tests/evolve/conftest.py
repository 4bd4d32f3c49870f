from __future__ import annotations

from pathlib import Path

import pytest

from evotui.dsl import load
from tests.conftest import ROOT

CONFIG_NAMES = ["tiny", "gpt2_124m", "scalehop_xover-68-8a93", "primitives"]
HERE = Path(__file__).resolve().parent


def config(name: str):
    """A shipped config, or ``primitives``: tiny with every attention kind, option and extra."""
    if name == "primitives":
        return load(HERE / "primitives.yaml")
    return load(ROOT / "configs" / f"{name}.yaml")


@pytest.fixture(scope="session")
def tiny():
    return config("tiny")


@pytest.fixture(scope="session")
def gpt2():
    return config("gpt2_124m")
