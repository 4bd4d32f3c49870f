"""The attention motifs of ``evotui ablate``: ALiBi, QK-norm, the output gate and the key
selector switched off; LINEAR and MLA attention turned back into softmax attention. Registered
in ``evotui.evolve.ablations.MOTIFS`` when that module is imported (see its docstring)."""

from __future__ import annotations

from typing import ClassVar

from evotui.dsl.model import BlockSpec, ModelSpec
from evotui.evolve.ablations import Ablation, Context, _count, register
from evotui.evolve.mutations.base import Data


class AttnOption(Ablation):
    """One attention option switched off everywhere it is on: ``field`` set to ``off``."""

    field: ClassVar[str] = ""
    off: ClassVar[object] = False
    what: ClassVar[str] = ""

    def _on(self, b: BlockSpec) -> bool:
        return b.attn is not None and getattr(b.attn, self.field) not in (self.off, None)

    def missing(self, spec: ModelSpec, ctx: Context) -> str | None:
        return None if any(self._on(b) for b in spec.blocks) else f"no attention with {self.what}"

    def edit(self, data: Data, spec: ModelSpec, ctx: Context) -> str:
        n = 0
        for b, block in zip(spec.blocks, data["blocks"], strict=True):
            if self._on(b):
                if self.off is None:
                    block["attn"].pop(self.field, None)
                else:
                    block["attn"][self.field] = self.off
                n += 1
        return f"{self.what} off in {_count(n, 'attention')}"


@register
class Alibi(AttnOption):
    name, field, what = "alibi", "alibi", "ALiBi"


@register
class QKNorm(AttnOption):
    name, field, what = "qk_norm", "qk_norm", "QK-norm"


@register
class AttnGate(AttnOption):
    name, field, off, what = "attn_gate", "gate", "none", "the output gate"


@register
class KeySelectToDense(AttnOption):
    name, field, off, what = "key_select->dense", "key_select", None, "the top-k key selector"


class KindToSoftmax(Ablation):
    """Every attention of one ``kind`` becomes plain softmax attention with the same heads."""

    kind: ClassVar[str] = ""
    target: ClassVar[str] = ""
    drop: ClassVar[tuple[str, ...]] = ()

    def missing(self, spec: ModelSpec, ctx: Context) -> str | None:
        if any(b.attn is not None and b.attn.kind == self.kind for b in spec.blocks):
            return None
        return f"no {self.kind} attention"

    def edit(self, data: Data, spec: ModelSpec, ctx: Context) -> str:
        n = 0
        for b, block in zip(spec.blocks, data["blocks"], strict=True):
            if b.attn is not None and b.attn.kind == self.kind:
                a = block["attn"]
                for key in self.drop:
                    a.pop(key, None)
                a["kind"] = self.target
                n += 1
        return f"{_count(n, self.kind + ' attention')} -> {self.target}"


@register
class LinearToSoftmax(KindToSoftmax):
    """LINEAR -> GQA with the same heads and KV groups (the projections carry over)."""

    name, kind, target, drop = "linear->softmax", "LINEAR", "GQA", ("chunk",)


@register
class MLAToMHA(KindToSoftmax):
    """MLA -> MHA with the same heads and head width (the output projection carries over)."""

    name, kind, target = "mla->mha", "MLA", "MHA"
    drop = ("kv_latent", "q_latent", "rope_dim", "kv_groups")
