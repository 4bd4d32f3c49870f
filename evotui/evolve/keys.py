"""A canonical key of an architecture, to spot a genome that was already evaluated."""

from __future__ import annotations

import hashlib
import json

from evotui.dsl.loader import to_data
from evotui.dsl.model import ModelSpec


def canonical(spec: ModelSpec) -> dict:
    """The spec's plain data without what does not change the model: its name and the
    blocks' ids and names."""
    data = to_data(spec)
    data.pop("name", None)
    for block in data["blocks"]:
        block.pop("id", None)
        block.pop("name", None)
    return data


def spec_key(spec: ModelSpec) -> str:
    """A hex digest equal for two specs exactly when they build the same architecture."""
    text = json.dumps(canonical(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]
