"""Strict JSON in and out: what evotui writes is valid JSON everywhere (no ``NaN``, no
``Infinity``), and a number read back is a finite float or nothing.

- :func:`finite`: a finite float, or None for a missing, non-numeric, boolean or non-finite
  value (a missing metric is never a zero);
- :func:`clean`: a copy of a document with every non-finite number turned into ``null``
  (numpy scalars become Python numbers);
- :func:`dumps` / :func:`write`: strict JSON text, and a file rewritten atomically with it;
- :func:`read`: a JSON file, or None when it is missing or not JSON.

Imports nothing heavy (numpy scalars are recognised through :mod:`numbers`).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evotui import atomic


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def clean(value: Any) -> Any:
    """``value`` with every non-finite number replaced by None, recursively through mappings,
    lists and tuples; numpy integers and floats become ``int`` and ``float``."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return finite(value)
    if isinstance(value, Mapping):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def dumps(doc: Any, indent: int | None = None, **kw: Any) -> str:
    """Strict JSON text of ``doc`` (non-finite numbers as ``null``)."""
    return json.dumps(clean(doc), indent=indent, allow_nan=False, **kw)


def write(path: str | Path, doc: Any, indent: int | None = 2, **kw: Any) -> None:
    """Rewrite ``path`` atomically with ``doc`` as strict JSON and a final newline."""
    atomic.write_text(path, dumps(doc, indent=indent, **kw) + "\n")


def read(path: str | Path) -> Any:
    """The JSON document in ``path``; None when it cannot be read or is not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
