"""The genome language: pydantic models, YAML load/dump, the estimator. Imports no torch."""

from evotui.dsl.estimate import Estimate, Tensor, estimate, manifest
from evotui.dsl.loader import dump, load, loads, parse, to_data
from evotui.dsl.model import (
    AttnSpec,
    BlockSpec,
    CustomExtra,
    DenseFFN,
    EmbSpec,
    GatedExtra,
    HeadSpec,
    ModelSpec,
    MoEFFN,
    Recurrence,
    RetroExtra,
    SSMSpec,
)
from evotui.dsl.patterns import Pattern
from evotui.dsl.run import (
    DataConfig,
    EvolutionConfig,
    Priors,
    RunConfig,
    ShardSpec,
    TrainConfig,
)
from evotui.dsl.schema import json_schema

__all__ = [
    "AttnSpec", "BlockSpec", "CustomExtra", "DataConfig", "DenseFFN", "EmbSpec", "Estimate",
    "EvolutionConfig", "GatedExtra", "HeadSpec", "ModelSpec", "MoEFFN", "Pattern", "Priors",
    "Recurrence", "RetroExtra", "RunConfig", "SSMSpec", "ShardSpec", "Tensor", "TrainConfig",
    "dump", "estimate", "json_schema", "load", "loads", "manifest", "parse", "to_data",
]
