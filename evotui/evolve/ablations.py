"""Ablations: switch off one motif of a genome at a time. Pure: no torch, no I/O.

A motif is an :class:`Ablation` (one small class each, registered in :data:`MOTIFS`, like the
mutation operators). ``applies(spec)`` says whether the genome has the motif, ``reason(spec)``
why not, and ``apply(spec)`` returns the validated genome without it (``ablate`` also returns a
one-line description of the change). The motifs:

* ``retro``: every retro memory extra removed.
* ``local_global->sliding``: every ``local_global`` attention becomes ``sliding`` with the same
  window (the global tokens go).
* ``kv_groups->1``: every attention with shared KV heads (GQA with kv_groups > 1, MQA) gets one
  KV head per query head (MHA).
* ``rope_theta->default``: every RoPE attention whose theta differs from the default gets the
  default: the run's ``priors.rope_theta_default`` when a run config is given, else the DSL's.
* ``norm``: RMSNorm <-> LayerNorm everywhere.
* ``ssm``: the SSM removed. A block whose token mixer is the SSM alone (no attention) is removed
  with its feed-forward and extras, and recurrence spans are remapped as block removal does; in
  a hybrid block (attention and SSM) only the SSM branch goes.
* ``moe->dense``: every MoE feed-forward becomes dense with the same *active* width, the width a
  token goes through: ``expert width x (k + shared)``. Active parameters and FLOPs per token stay
  the same; total parameters drop (the unused experts go). This isolates routing and capacity
  from compute per token.
* ``alibi``, ``qk_norm``, ``attn_gate``: that attention option switched off everywhere.
* ``key_select->dense``: every top-k key selector removed (dense causal attention).
* ``linear->softmax``: every LINEAR attention becomes GQA with the same heads and KV groups
  (its projections carry over).
* ``mla->mha``: every MLA attention becomes MHA with the same heads and head width.
* ``extra:<kind>``: every extra of one other kind removed: ``extra:gated`` (branch gates),
  ``extra:memory_tokens``, ``extra:chunk_memory``, ``extra:assoc_memory``,
  ``extra:layer_scale``, ``extra:branch_router`` and ``extra:custom:<name>`` (a registered
  custom component), one motif per kind present.

Removing a branch also drops it from the block's gate, layer-scale and router targets (a gate
or scale left with none goes, a router left with fewer than two), and
a block left with no branch is removed. Block ids never change, so a variant inherits every
tensor of its candidate that still exists with the same shape (``inheritance_map`` with each
block coming from the block of the same id). A motif that would leave no block does not apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import ValidationError

from evotui.dsl import components
from evotui.dsl.loader import to_data
from evotui.dsl.model import BlockSpec, ModelSpec, MoEFFN
from evotui.dsl.run import Priors, RunConfig
from evotui.evolve.inheritance import extra_kind
from evotui.evolve.mutations.base import Data
from evotui.evolve.mutations.helpers import branches, prune_gate, remove_block
from evotui.evolve.variation import validate_model

DSL_ROPE_THETA: float = Priors.model_fields["rope_theta_default"].default
EXTRA_PREFIX = "extra:"
# extra kinds removable as ``extra:<kind>`` (retro is its own motif; custom ones by name)
REMOVABLE = ("gated", "memory_tokens", "chunk_memory", "assoc_memory", "layer_scale",
             "branch_router")


class AblationError(ValueError):
    """The motif does not apply, its name is unknown, or the variant does not validate."""


class NotApplicable(Exception):  # noqa: N818 - a signal from ``edit``, like mutations' Skip
    """Raised by ``edit`` when the genome has the motif but cannot lose it (nothing left)."""


@dataclass(frozen=True)
class Context:
    """What ablations read besides the genome: the default RoPE theta and, when given, the run
    config the variant is validated in (windows within ``data.seq_len`` and the like)."""

    rope_theta_default: float = DSL_ROPE_THETA
    cfg: RunConfig | None = None

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Context:
        return cls(cfg.priors.rope_theta_default, cfg)


@dataclass(frozen=True)
class Variant:
    motif: str
    spec: ModelSpec
    change: str  # what was switched off, for the report


class Ablation:
    """One motif. Subclasses set ``name`` and implement ``missing`` and ``edit``."""

    name: ClassVar[str] = ""

    def missing(self, spec: ModelSpec, ctx: Context) -> str | None:
        """Why ``spec`` does not have this motif (None: it has)."""
        raise NotImplementedError

    def edit(self, data: Data, spec: ModelSpec, ctx: Context) -> str:
        """Switch the motif off in ``data`` (``to_data(spec)``) in place; return the change.
        Raise :class:`NotApplicable` when that would leave no valid genome."""
        raise NotImplementedError

    def reason(self, spec: ModelSpec, ctx: Context | None = None) -> str | None:
        """Why this motif does not apply to ``spec``; None when it does."""
        ctx = ctx or Context()
        why = self.missing(spec, ctx)
        if why is not None:
            return why
        try:
            self.edit(to_data(spec), spec, ctx)
        except NotApplicable as e:
            return str(e)
        return None

    def applies(self, spec: ModelSpec, ctx: Context | None = None) -> bool:
        return self.reason(spec, ctx) is None

    def ablate(self, spec: ModelSpec, ctx: Context | None = None) -> Variant:
        """The validated variant of ``spec`` without this motif."""
        ctx = ctx or Context()
        why = self.reason(spec, ctx)
        if why is not None:
            raise AblationError(f"{self.name} does not apply: {why}")
        data = to_data(spec)
        change = self.edit(data, spec, ctx)
        try:
            variant = (validate_model(ctx.cfg, data) if ctx.cfg is not None
                       else ModelSpec.model_validate(data))
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            raise AblationError(f"{self.name}: the variant does not validate ({where}: "
                                f"{err['msg']})") from None
        return Variant(self.name, variant, change)

    def apply(self, spec: ModelSpec, ctx: Context | None = None) -> ModelSpec:
        return self.ablate(spec, ctx).spec

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


MOTIFS: dict[str, Ablation] = {}


def register(cls: type[Ablation]) -> type[Ablation]:
    if not cls.name or cls.name in MOTIFS or cls.name.startswith(EXTRA_PREFIX):
        raise ValueError(f"{cls.__name__}: bad or duplicate motif name {cls.name!r}")
    MOTIFS[cls.name] = cls()
    return cls


# -- shared edits ------------------------------------------------------------------------------

def drop_empty_blocks(data: Data) -> list[str]:
    """Remove blocks left with no branch (spans remapped); return their ids. Raises
    :class:`NotApplicable` when no block would be left."""
    empty = [i for i, b in enumerate(data["blocks"]) if not branches(b)]
    if len(empty) == len(data["blocks"]):
        raise NotApplicable("every block would be left empty")
    return [remove_block(data, i)["id"] for i in reversed(empty)][::-1]


def _removed(ids: Sequence[str]) -> str:
    return f"; block{'s' if len(ids) > 1 else ''} {', '.join(ids)} removed" if ids else ""


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


# -- the motifs --------------------------------------------------------------------------------

class RemoveExtras(Ablation):
    """Every extra of one kind (``extra_kind``: retro, gated or custom:<name>) removed."""

    def __init__(self, kind: str, name: str | None = None):
        self.kind = kind
        self.name = name or f"{EXTRA_PREFIX}{kind}"  # type: ignore[misc]

    def missing(self, spec: ModelSpec, ctx: Context) -> str | None:
        if any(extra_kind(e) == self.kind for b in spec.blocks for e in b.extras):
            return None
        return f"no {self.kind} extra"

    def edit(self, data: Data, spec: ModelSpec, ctx: Context) -> str:
        n = 0
        for b, block in zip(spec.blocks, data["blocks"], strict=True):
            keep = [e for e, s in zip(block.get("extras", []), b.extras, strict=True)
                    if extra_kind(s) != self.kind]
            n += len(b.extras) - len(keep)
            block["extras"] = keep
            prune_gate(block)
        return f"{_count(n, self.kind + ' extra')} removed" + _removed(drop_empty_blocks(data))


@register
class Retro(RemoveExtras):
    name = "retro"

    def __init__(self) -> None:
        super().__init__("retro", "retro")

    def missing(self, spec: ModelSpec, ctx: Context) -> str | None:
        return None if super().missing(spec, ctx) is None else "no retro memory"


@register
class LocalGlobalToSliding(Ablation):
    name = "local_global->sliding"

    def missing(self, spec: ModelSpec, ctx: Context) -> str | None:
        if any(b.attn is not None and b.attn.sparsity == "local_global" for b in spec.blocks):
            return None
        return "no local_global attention"

    def edit(self, data: Data, spec: ModelSpec, ctx: Context) -> str:
        n = 0
        for block in data["blocks"]:
            a = block.get("attn")
            if a is not None and a.get("sparsity") == "local_global":
                a["sparsity"] = "sliding"
                a.pop("global_stride", None)
                n += 1
        return f"{_count(n, 'local_global attention')} -> sliding (same window)"


@register
class KVGroupsToOne(Ablation):
    name = "kv_groups->1"

    def missing(self, spec: ModelSpec, ctx: Context) -> str | None:
        if any(b.attn is not None and (b.attn.kv_groups or 1) > 1 for b in spec.blocks):
            return None
        return "no attention shares KV heads"

    def edit(self, data: Data, spec: ModelSpec, ctx: Context) -> str:
        n = 0
        for b, block in zip(spec.blocks, data["blocks"], strict=True):
            if b.attn is not None and (b.attn.kv_groups or 1) > 1:
                if b.attn.kind != "LINEAR":  # LINEAR stays linear, with a KV head per head
                    block["attn"]["kind"] = "MHA"
                block["attn"]["kv_groups"] = 1
                n += 1
        return f"{_count(n, 'attention')} -> one KV head per query head"


@register
class RopeThetaToDefault(Ablation):
    name = "rope_theta->default"

    @staticmethod
    def _changed(b: BlockSpec, default: float) -> bool:
        a = b.attn
        return (a is not None and a.rope != "none" and a.rope_theta is not None
                and a.rope_theta != default)

    def missing(self, spec: ModelSpec, ctx: Context) -> str | None:
        if any(self._changed(b, ctx.rope_theta_default) for b in spec.blocks):
            return None
        return f"every RoPE attention uses the default theta {ctx.rope_theta_default:g}"

    def edit(self, data: Data, spec: ModelSpec, ctx: Context) -> str:
        old = set()
        for b, block in zip(spec.blocks, data["blocks"], strict=True):
            if self._changed(b, ctx.rope_theta_default):
                old.add(f"{b.attn.rope_theta:g}")  # type: ignore[union-attr]
                block["attn"]["rope_theta"] = float(ctx.rope_theta_default)
        return f"rope_theta {', '.join(sorted(old))} -> {ctx.rope_theta_default:g}"


@register
class NormSwap(Ablation):
    name = "norm"

    def missing(self, spec: ModelSpec, ctx: Context) -> str | None:
        return None

    def edit(self, data: Data, spec: ModelSpec, ctx: Context) -> str:
        data["norm"] = "layernorm" if spec.norm == "rmsnorm" else "rmsnorm"
        return f"{spec.norm} -> {data['norm']}"


@register
class RemoveSSM(Ablation):
    name = "ssm"

    def missing(self, spec: ModelSpec, ctx: Context) -> str | None:
        return None if any(b.ssm is not None for b in spec.blocks) else "no SSM branch"

    def edit(self, data: Data, spec: ModelSpec, ctx: Context) -> str:
        hybrid = 0
        for b, block in zip(spec.blocks, data["blocks"], strict=True):
            if b.ssm is None:
                continue
            del block["ssm"]
            if b.attn is None:  # an SSM block: it goes whole, with its ffn and extras
                for key in ("ffn", "extras"):
                    block.pop(key, None)
            else:
                hybrid += 1
                prune_gate(block)
        try:
            removed = drop_empty_blocks(data)
        except NotApplicable:
            raise NotApplicable("every block is an SSM block; nothing would be left") from None
        parts = [f"{_count(len(removed), 'SSM block')} removed ({', '.join(removed)})"
                 if removed else ""]
        if hybrid:
            parts.append(f"SSM branch removed from {_count(hybrid, 'hybrid block')}")
        return "; ".join(p for p in parts if p)


@register
class MoEToDense(Ablation):
    name = "moe->dense"

    def missing(self, spec: ModelSpec, ctx: Context) -> str | None:
        return None if any(isinstance(b.ffn, MoEFFN) for b in spec.blocks) else "no MoE FFN"

    def edit(self, data: Data, spec: ModelSpec, ctx: Context) -> str:
        changes = []
        for b, block in zip(spec.blocks, data["blocks"], strict=True):
            f = b.ffn
            if isinstance(f, MoEFFN):
                width = f.expert_hidden * (f.k + f.shared)
                block["ffn"] = {"type": "dense", "hidden": width, "activation": f.activation}
                changes.append(f"{b.id}: moe {f.hidden} (top-{f.k}+{f.shared} of "
                               f"{f.n_experts}) -> dense {width}")
        return "; ".join(changes)


from evotui.evolve import ablation_motifs  # noqa: E402, F401, I001  (registers attention motifs)

# -- the registry ------------------------------------------------------------------------------

def extra_kinds(spec: ModelSpec) -> list[str]:
    """Extra kinds of ``spec`` other than retro (which is its own motif), in order of
    appearance: ``gated``, ``custom:<name>``."""
    kinds = (extra_kind(e) for b in spec.blocks for e in b.extras)
    return [k for k in dict.fromkeys(kinds) if k != "retro"]


def motif_names(specs: Iterable[ModelSpec] = ()) -> list[str]:
    """The fixed motifs, then ``extra:<kind>`` for each other extra kind in any of ``specs``."""
    extras = [EXTRA_PREFIX + k for s in specs for k in extra_kinds(s)]
    return [*MOTIFS, *dict.fromkeys(extras)]


def get(name: str) -> Ablation:
    """The motif called ``name`` (``-to-`` may stand for ``->``, which a shell would take for a
    redirection: ``moe-to-dense``); :class:`AblationError` naming the valid ones otherwise."""
    if name in MOTIFS:
        return MOTIFS[name]
    if name.replace("-to-", "->") in MOTIFS:
        return MOTIFS[name.replace("-to-", "->")]
    if name.startswith(EXTRA_PREFIX):
        kind = name[len(EXTRA_PREFIX):]
        if kind in REMOVABLE or (kind.startswith("custom:")
                                 and components.get(kind[len("custom:"):]) is not None):
            return RemoveExtras(kind)
        if kind == "retro":
            raise AblationError("retro memory is the motif 'retro'")
    custom = ", ".join(f"{EXTRA_PREFIX}custom:{c}" for c in components.names())
    extras = ", ".join(EXTRA_PREFIX + k for k in REMOVABLE)
    raise AblationError(f"unknown motif {name!r}; motifs: {', '.join(MOTIFS)}, "
                        f"{extras}" + (f", {custom}" if custom else ""))


def ablations(spec: ModelSpec, names: Sequence[str] | None = None,
              ctx: Context | None = None) -> dict[str, Variant | str]:
    """Each motif (``names``, default: :func:`motif_names` of ``spec``) -> its validated
    variant, or the reason it does not apply (a string): nothing is silently dropped."""
    out: dict[str, Variant | str] = {}
    for name in names if names is not None else motif_names([spec]):
        motif = get(name)
        why = motif.reason(spec, ctx)
        out[name] = why if why is not None else motif.ablate(spec, ctx)
    return out


__all__ = ["DSL_ROPE_THETA", "MOTIFS", "Ablation", "AblationError", "Context", "NotApplicable",
           "RemoveExtras", "Variant", "ablations", "extra_kinds", "get", "motif_names",
           "register"]
