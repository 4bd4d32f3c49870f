"""Depth-recurrence operators: loop a span of blocks, resize or tune a loop, remove it.

Spans are inclusive, lie inside the block list and never overlap."""

from __future__ import annotations

import random

from evotui.dsl.model import ModelSpec
from evotui.evolve.mutations.base import Data, Mutation, MutationContext, Skip, register
from evotui.evolve.mutations.helpers import choose_other, free_ranges

MAX_SPAN = 4


def spans(data: Data) -> list[tuple[int, int]]:
    return [(r["start"], r["end"]) for r in data.get("recurrences", [])]


@register
class AddLoop(Mutation):
    name = "rec.add"
    weight = 0.3

    def applicable(self, spec: ModelSpec, ctx: MutationContext) -> bool:
        taken = [(r.start, r.end) for r in spec.recurrences]
        return bool(free_ranges(len(spec.blocks), taken))

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        lo, hi = rng.choice(free_ranges(len(data["blocks"]), spans(data)))
        length = rng.randint(1, min(MAX_SPAN, hi - lo + 1))
        start = rng.randint(lo, hi - length + 1)
        rec: Data = {"start": start, "end": start + length - 1,
                     "train_recurrence": rng.choice((2, 2, 3))}
        if rng.random() < 0.5:
            rec["concat_prelude"] = True
            rec["adapter"] = "linear"
        recs = data.setdefault("recurrences", [])
        recs.append(rec)
        recs.sort(key=lambda r: r["start"])
        ctx.note = f"blocks {rec['start']}..{rec['end']} x{rec['train_recurrence']}"


class LoopMutation(Mutation):
    """An operator on one existing recurrence span."""

    def applicable(self, spec: ModelSpec, ctx: MutationContext) -> bool:
        return bool(spec.recurrences)

    @staticmethod
    def pick(data: Data, rng: random.Random) -> tuple[int, Data]:
        r = rng.randrange(len(data["recurrences"]))
        return r, data["recurrences"][r]


@register
class ResizeLoop(LoopMutation):
    """Grow or shrink a span by one block at either end."""

    name = "rec.resize"
    weight = 0.3

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        recs = data["recurrences"]
        r, rec = self.pick(data, rng)
        others = {i for j, o in enumerate(recs) if j != r for i in range(o["start"], o["end"] + 1)}
        n = len(data["blocks"])
        moves = []
        if rec["start"] > 0 and rec["start"] - 1 not in others:
            moves.append(("start", -1))
        if rec["end"] < n - 1 and rec["end"] + 1 not in others:
            moves.append(("end", 1))
        if rec["end"] > rec["start"]:
            moves += [("start", 1), ("end", -1)]
        if not moves:
            raise Skip
        old = (rec["start"], rec["end"])
        edge, step = rng.choice(moves)
        rec[edge] += step
        ctx.note = f"loop {r}: {old[0]}..{old[1]} -> {rec['start']}..{rec['end']}"


@register
class TuneLoop(LoopMutation):
    """Loop count, its random range, the curriculum, or the adapter."""

    name = "rec.tune"
    weight = 0.3

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        r, rec = self.pick(data, rng)
        knob = rng.choice(("train_recurrence", "max_train_recurrence", "curriculum_fraction",
                           "adapter"))
        old = rec.get(knob)
        if knob == "train_recurrence":
            rec[knob] = choose_other(rng, (2, 3, 4), old)
            if rec.get("max_train_recurrence", rec[knob]) < rec[knob]:
                rec["max_train_recurrence"] = rec[knob]
        elif knob == "max_train_recurrence":
            t = rec.get("train_recurrence", 2)
            new = choose_other(rng, (None, t + 1, t + 2), old)
            if new is None:
                rec.pop(knob, None)
            else:
                rec[knob] = new
        elif knob == "curriculum_fraction":
            rec[knob] = choose_other(rng, (0.0, 0.25, 0.5), old)
        else:
            # none -> linear -> linear with the prelude concatenated -> none
            state = "concat" if rec.get("concat_prelude") else rec.get("adapter", "none")
            new_state = choose_other(rng, ("none", "linear", "concat"), state)
            rec["concat_prelude"] = new_state == "concat"
            rec["adapter"] = "none" if new_state == "none" else "linear"
            ctx.note = f"loop {r}: adapter {state} -> {new_state}"
            return
        ctx.note = f"loop {r}: {knob} {old} -> {rec.get(knob)}"


@register
class RemoveLoop(LoopMutation):
    name = "rec.remove"
    weight = 0.2

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        r, rec = self.pick(data, rng)
        data["recurrences"].pop(r)
        ctx.note = f"loop {r}: blocks {rec['start']}..{rec['end']}"
