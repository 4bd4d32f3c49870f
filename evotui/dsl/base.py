"""Shared pieces of the genome models: strict validation and the earlier dialect's no-op keys."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

PosInt = Annotated[int, Field(gt=0, le=1 << 40)]  # sizes; the bound keeps builds in range
Prob = Annotated[float, Field(ge=0.0, lt=1.0)]


def fail(field: str | None, message: str) -> PydanticCustomError:
    """An error for ``field`` of the model being validated (the path is completed on output)."""
    return PydanticCustomError("evotui", "{message}", {"message": message, "field": field or ""})


def note(info: ValidationInfo | None, message: str) -> None:
    """Record a non-fatal remark (shown by ``evotui validate``) when a context collects them."""
    if info is not None and isinstance(info.context, dict):
        info.context.setdefault("notes", []).append(message)


def _is_noop(value: Any) -> bool:
    return value is None or value is False or value == 0 or value == [] or value == {}


class Strict(BaseModel):
    """Base of every genome model: unknown keys are errors, types are not coerced.

    ``legacy`` lists keys of the earlier dialect that evotui does not implement. A file may keep
    them only with a value that has no effect (null, false, 0, empty); the key is then dropped.
    Any other value is an error whose message says what to use instead.
    """

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False,
                              allow_inf_nan=False)

    legacy: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _drop_legacy_noops(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or not cls.legacy:
            return data
        out = dict(data)
        for key, fix in cls.legacy.items():
            if key not in out:
                continue
            if not _is_noop(out[key]):
                raise fail(key, f"not supported by evotui; {fix}")
            del out[key]
        return out
