"""The earlier system's YAML dialect, read into the model that system meant.

That system (see docs/dsl.md, "The earlier system's dialect") dumped every key even at its
default, silently dropped unknown keys, and gave some names a meaning different from evotui's.
:func:`detect` recognises its files by keys only it has; :func:`translate` turns the raw data
into evotui's native form before validation:

- keys at their neutral values (``causal: true``, ``alibi: false``, ``selector: none``, null
  sizes, ...) are dropped without a word;
- names whose meaning differs are translated, one note per translation (MoE ``hidden`` per
  expert, exclusive recurrence ``end``, GQA without ``kv_groups``, a missing ``rope``, scaled
  RoPE without a factor, windows that counted ``w`` keys besides the query, ...);
- what evotui cannot honour is refused with one line naming the field and why.

It works on plain data (the parsed YAML) and imports no torch.
"""

from __future__ import annotations

from typing import Any

from evotui.errors import Problem, UserError

EARLIER = "earlier"
NATIVE = "evotui"
DIALECT_NOTE = "dialect: read as the earlier system's dialect"

# Keys that only the earlier dialect has, by section: any one of them marks a file.
MARKERS = {
    "model": ("kv_policy", "macro"),
    "emb": ("rope",),
    "attn": ("causal", "linear_feature_map", "kv_latent_dim", "qk_norm_max",
             "gating_pos", "gating_op", "gated", "selector", "selector_topk", "selector_heads",
             "selector_dim", "selector_rope", "selector_detach", "stencil", "softmax",
             "projection", "value_glu", "sliding_window"),
    "ffn": ("shared_expert", "router_type", "router_bias_detached", "drop_policy",
            "router_lb_weight", "router_aux_weight", "experts"),
    "recurrence": ("init_state", "noise_std", "adapter_dim"),
    "top": ("composite_metrics",),
    "data": ("streaming", "healing_shards", "healing_tokens"),
    "evolution": ("pareto_objectives", "mutation_steps", "structural_elite_k",
                  "structural_elite_weights", "promotion_prob"),
}
# Top-level keys the earlier orchestrator read through getattr; they never changed a run.
DROPPED_EVOLUTION = ("mutation_steps", "structural_elite_k", "structural_elite_weights")


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _blocks(model: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = model.get("blocks")
    return [b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []


def detect(data: Any) -> tuple[str, str | None]:
    """(``"earlier"`` and the first marking key's path) or (``"evotui"``, None). ``data`` is a
    whole run config or a bare model section."""
    if not isinstance(data, dict):
        return NATIVE, None
    model = _dict(data.get("model")) if "model" in data else data
    for key in MARKERS["model"]:
        if key in model:
            return EARLIER, f"model.{key}"
    if "rope" in _dict(model.get("emb")):
        return EARLIER, "model.emb.rope"
    for i, b in enumerate(_blocks(model)):
        for section in ("attn", "ffn"):
            for key in MARKERS[section]:
                if key in _dict(b.get(section)):
                    return EARLIER, f"model.blocks[{i}].{section}.{key}"
    recs = model.get("recurrences")
    for i, r in enumerate(recs if isinstance(recs, list) else []):
        for key in MARKERS["recurrence"]:
            if key in _dict(r):
                return EARLIER, f"model.recurrences[{i}].{key}"
    if "model" in data:
        for section in ("top", "data", "evolution"):
            where = data if section == "top" else _dict(data.get(section))
            for key in MARKERS[section]:  # evotui dumps an empty pareto_objectives
                if key in where and not (key == "pareto_objectives" and not where[key]):
                    return EARLIER, (key if section == "top" else f"{section}.{key}")
    return NATIVE, None


class Refused(UserError):
    """A field of the earlier dialect that evotui cannot honour."""


class _Reader:
    """One translation pass: collects notes; refusals raise with the field's line."""

    def __init__(self, lines: dict[tuple[Any, ...], int] | None, source: str | None,
                 notes: list[str], prefix: tuple[Any, ...]):
        self.lines = lines or {}
        self.source = source
        self.notes = notes
        self.prefix = prefix

    def note(self, loc: tuple[Any, ...], message: str) -> None:
        from evotui.dsl.loader import format_loc

        text = f"{format_loc((*self.prefix, *loc))}: {message}" if loc else message
        if text not in self.notes:
            self.notes.append(text)

    def refuse(self, loc: tuple[Any, ...], message: str) -> Refused:
        from evotui.dsl.loader import _line_for, format_loc

        full = (*self.prefix, *loc)
        return Refused([Problem(format_loc(full), message, _line_for(full, self.lines))],
                       self.source)


def _neutral(value: Any) -> bool:
    return value is None or value is False or value == 0 or value == [] or value == {} or (
        isinstance(value, str) and value.lower() in ("none", "")
    )


def translate(data: Any, lines: dict[tuple[Any, ...], int] | None = None,
              source: str | None = None, notes: list[str] | None = None) -> Any:
    """Native data for an earlier-dialect ``data`` (a run config or a bare model section);
    native data comes back unchanged. Notes (first: which dialect and why) go to ``notes``."""
    dialect, marker = detect(data)
    if dialect == NATIVE:
        return data
    notes = notes if notes is not None else []
    notes.append(f"{DIALECT_NOTE} ({marker} marks it); `evotui convert` writes the native form")
    whole = "model" in data
    out = dict(data)
    seq_len = _dict(data.get("data")).get("seq_len") if whole else None
    lb_global = _dict(data.get("train")).get("router_lb_coeff") if whole else None
    reader = _Reader(lines, source, notes, ("model",) if whole else ())
    from evotui.dsl.dialect_model import translate_model

    model = _dict(out["model"]) if whole else out
    model = translate_model(model, reader, seq_len if isinstance(seq_len, int) else None,
                            bool(lb_global))
    if not whole:
        return model
    out["model"] = model
    evo = _dict(out.get("evolution"))
    dropped = [k for k in DROPPED_EVOLUTION if k in evo]
    if dropped:
        out["evolution"] = {k: v for k, v in evo.items() if k not in dropped}
        top = _Reader(lines, source, notes, ())
        top.note(("evolution",), f"{', '.join(dropped)} dropped (the earlier system ignored "
                 "them too: its orchestrator used its own defaults)")
    return out


def _drop_nulls(d: dict[str, Any], keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None or (keys is not None and k not in keys)}


def _recurrences(raw: Any, n_blocks: int, r: _Reader) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    taken: list[tuple[int, int]] = []
    for i, rec in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(rec, dict):
            out.append(rec)
            continue
        loc = ("recurrences", i)
        x = _drop_nulls(rec)
        start, end = x.get("start"), x.get("end")
        if not isinstance(start, int) or not isinstance(end, int):
            out.append(x)  # validation names the missing field
            continue
        if end <= start:
            raise r.refuse((*loc, "end"), f"the earlier span [{start}, {end}) holds no block "
                           "(end is exclusive there); remove the loop")
        if start >= n_blocks or any(start < e2 and s2 < end for s2, e2 in taken):
            r.note(loc, "dropped: it never ran in the earlier system (it starts past the last "
                   "block or overlaps an earlier loop)")
            continue
        last = min(end, n_blocks) - 1
        r.note((*loc, "end"), f"{end} (exclusive) -> {last} (evotui's end is inclusive)")
        taken.append((start, last + 1))
        y: dict[str, Any] = {"start": start, "end": last}
        if x.get("adapter", "linear") != "linear":
            raise r.refuse((*loc, "adapter"), f"{x['adapter']!r} is not built by evotui; "
                           "use linear")
        y["concat_prelude"] = x.get("concat_prelude", True)
        y["adapter"] = "linear"
        if not y["concat_prelude"]:
            r.note((*loc, "concat_prelude"), "false made the earlier loop discard its input (its "
                   "logits did not depend on the tokens); evotui's loop starts from the span "
                   "input and feeds its state back through the adapter")
        if "init_state" in x or "noise_std" in x:
            r.note((*loc, "init_state"), "dropped: evotui's first loop starts from the span "
                   "input, not from zeros or noise")
        lo, hi = x.get("train_recurrence", 1), x.get("max_train_recurrence", 4)
        hi = max(lo, hi)
        y["train_recurrence"] = hi
        y["curriculum_fraction"] = x.get("curriculum_fraction", 0.25)
        if lo > 1 and y["curriculum_fraction"] > 0:
            r.note((*loc, "train_recurrence"), f"the earlier loop count ramped {lo} -> {hi}; "
                   f"evotui's ramps 1 -> {hi} over the same fraction")
        tests = x.get("test_recurrences", [1, 2, 4, 8]) if not taken[:-1] else []
        if taken[:-1] and x.get("test_recurrences"):
            r.note((*loc, "test_recurrences"), "dropped: the earlier system read only the first "
                   "loop's list")
        y["test_recurrences"] = [t for t in tests if t != hi]
        if hi == 1 and not y["test_recurrences"]:
            r.note(loc, "dropped: one loop and nothing to evaluate is no recurrence")
            taken.pop()
            continue
        out.append(y)
    return out
