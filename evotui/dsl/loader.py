"""YAML in and out: strict parsing, errors that name the file, line and field path."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from evotui.errors import Problem, UserError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]
UNION_TAGS = {"ffn": ("dense", "moe"), "extras": ("retro", "gated", "custom", "memory_tokens",
                                                "chunk_memory", "assoc_memory", "layer_scale",
                                                "branch_router")}
MAX_CONFIG_BYTES = 4 * 2**20  # the 573M reference config is 4 KB
MAX_NODES = 100_000  # YAML nodes once aliases are expanded (nested aliases grow exponentially)


def read_yaml(text: str, source: str | None = None) -> tuple[Any, dict[Loc, int]]:
    """Parse YAML text; return the data and a map from field path to 1-based line.

    Duplicate keys are errors (PyYAML would keep the last one without a word). Text over
    :data:`MAX_CONFIG_BYTES` and aliases expanding to over :data:`MAX_NODES` nodes (a
    "billion laughs") are refused before anything walks them."""
    _check_size(len(text.encode("utf-8", "surrogatepass")), source)
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            lines: dict[Loc, int] = {}
            if node is not None:
                _check_expansion(node, source)
                _index(node, (), lines, source)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        raise UserError([Problem("", f"YAML syntax error: {what}", line)], source) from None
    return data, lines


def _check_size(size: int, source: str | None) -> None:
    if size > MAX_CONFIG_BYTES:
        raise UserError.single(f"the file is {size / 2**20:.1f} MiB; a config is at most "
                               f"{MAX_CONFIG_BYTES // 2**20} MiB (is this the right file?)",
                               source=source)


def _check_expansion(root: yaml.Node, source: str | None) -> None:
    """Count the nodes a full walk would visit (an alias counts its whole target each time
    it is used), memoised per node, so the count itself costs one pass over the file."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = MAX_NODES + 1  # a node reached again while counting it: a cycle
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(v) for v in node.value)
        sizes[id(node)] = min(total, MAX_NODES + 1)
        return sizes[id(node)]

    if size(root) > MAX_NODES:
        raise UserError([Problem("", f"YAML aliases expand to more than {MAX_NODES:,} values "
                                 "(nested anchors and aliases); write the repeated parts out "
                                 "or use fewer levels of aliases", root.start_mark.line + 1)],
                        source)


def _index(node: yaml.Node, loc: Loc, lines: dict[Loc, int], source: str | None) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                path = format_loc((*loc, key))
                raise UserError([Problem(path, f"duplicate key (first on line {seen[key]})",
                                         line)], source)
            seen[key] = line
            lines[(*loc, key)] = line
            _index(value_node, (*loc, key), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            _index(item, (*loc, i), lines, source)


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _split_field(field: str) -> Loc:
    return tuple(int(p) if p.isdigit() else p for p in field.split(".") if p)


def _clean_loc(loc: Loc) -> Loc:
    out: list[str | int] = []
    for part in loc:
        if out and isinstance(part, str):
            owner = out[-1] if not isinstance(out[-1], int) else out[-2] if len(out) > 1 else None
            if owner in UNION_TAGS and part in UNION_TAGS[owner]:
                continue
        out.append(part)
    return tuple(out)


def problems_from(err: ValidationError, root: type[BaseModel], lines: dict[Loc, int],
                  prefix: Loc = ()) -> list[Problem]:
    problems = []
    for e in err.errors(include_url=False):
        loc = (*prefix, *_clean_loc(tuple(e["loc"])))
        ctx = e.get("ctx") or {}
        if e["type"] == "evotui":
            loc = (*loc, *_split_field(ctx.get("field", "")))
            msg = ctx["message"]
        elif e["type"] == "extra_forbidden":
            allowed = _fields_at(root, loc[len(prefix):-1])
            msg = "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif e["type"] == "missing":
            msg = "required, but missing"
        else:
            msg = e["msg"]
            if e["type"] not in ("literal_error", "union_tag_invalid") and "input" in e:
                shown = repr(e["input"])
                msg += f" (got {shown if len(shown) < 40 else shown[:37] + '...'})"
        problems.append(Problem(format_loc(loc), msg, _line_for(loc, lines)))
    return problems


def _line_for(loc: Loc, lines: dict[Loc, int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _fields_at(root: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the model class found by walking ``loc`` from ``root``."""
    current: Any = root
    for part in loc:
        current = _model_in(current, part)
        if current is None:
            return []
    return list(current.model_fields) if _is_model(current) else []


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _model_in(t: Any, part: str | int) -> Any:
    if _is_model(t):
        if not isinstance(part, str) or part not in t.model_fields:
            return None
        return _unwrap(t.model_fields[part].annotation)
    if isinstance(t, list):  # candidates from a union: pick by field name
        for c in t:
            found = _model_in(c, part)
            if found is not None:
                return found
        return None
    origin = typing.get_origin(t)
    if origin in (list, dict):
        return _unwrap(typing.get_args(t)[-1])
    return None


def _unwrap(t: Any) -> Any:
    origin = typing.get_origin(t)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(t)[0])
    if origin in (typing.Union, types.UnionType):
        models = [_unwrap(a) for a in typing.get_args(t) if a is not type(None)]
        return models[0] if len(models) == 1 else models
    return t


def parse(data: Any, cls: type[M], source: str | None = None,
          lines: dict[Loc, int] | None = None, notes: list[str] | None = None) -> M:
    """Validate already-parsed data as ``cls``; raise :class:`UserError` with every problem."""
    if data is None:
        raise UserError.single("the file is empty; a config is a mapping with sections "
                               "model, data, train, evolution, priors", source=source)
    if not isinstance(data, dict):
        kind = type(data).__name__.replace("str", "a string").replace("list", "a list")
        raise UserError.single(f"expected a mapping of sections (model, data, train, "
                               f"evolution, priors), got {kind}", source=source)
    context: dict[str, Any] = {"notes": notes if notes is not None else []}
    data = _native(data, cls, source, lines, context["notes"])
    try:
        return cls.model_validate(data, context=context)
    except ValidationError as e:
        raise UserError(problems_from(e, cls, lines or {}), source) from None


def _native(data: Any, cls: type[BaseModel], source: str | None,
            lines: dict[Loc, int] | None, notes: list[str]) -> Any:
    """A run config or model section in the earlier system's dialect, translated (with notes)."""
    from evotui.dsl import dialect
    from evotui.dsl.model import ModelSpec
    from evotui.dsl.run import RunConfig

    if cls is RunConfig or cls is ModelSpec:
        return dialect.translate(data, lines, source, notes)
    return data


def load(path: str | Path, cls: type[M] | None = None, notes: list[str] | None = None) -> M:
    """Read and validate a config file (a :class:`RunConfig` unless ``cls`` says otherwise)."""
    from evotui.dsl.run import RunConfig

    p = Path(path)
    source = str(path)
    try:
        if p.is_file():
            _check_size(p.stat().st_size, source)
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError.single("no such file", source=source) from None
    except IsADirectoryError:
        raise UserError.single("is a directory; give a YAML config file", source=source) from None
    except UnicodeDecodeError:
        raise UserError.single("is not UTF-8 text; give a YAML config file",
                               source=source) from None
    data, lines = read_yaml(text, source)
    return parse(data, cls or RunConfig, source, lines, notes)  # type: ignore[arg-type]


def to_data(cfg: BaseModel) -> dict[str, Any]:
    """The config as plain data: resolved values, unset optional fields left out."""
    return cfg.model_dump(mode="json", exclude_none=True)


def dump(cfg: BaseModel) -> str:
    return yaml.safe_dump(to_data(cfg), sort_keys=False, default_flow_style=None, width=100)


def loads(text: str, cls: type[M] | None = None, source: str | None = None) -> M:
    from evotui.dsl.run import RunConfig

    data, lines = read_yaml(text, source)
    return parse(data, cls or RunConfig, source, lines)  # type: ignore[arg-type]
