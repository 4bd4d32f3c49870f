"""JSON Schema of the config format, for editors' YAML language servers."""

from __future__ import annotations

from typing import Any


def json_schema() -> dict[str, Any]:
    from evotui.dsl.run import RunConfig

    schema = RunConfig.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "evotui run config",
        "description": "An evotui config: model genome, train, data, evolution, priors.",
    }
