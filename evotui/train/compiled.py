"""Compiling one candidate so the compile holds, and saying what it did.

A worker trains many candidates in one process. Each gets a fresh Dynamo state
(``torch._dynamo.reset()``: no cache entries or recompile counts left from the last
candidate's code) and is compiled per block: every ``Block`` is its own region, the Python
around them (embeddings, the recurrence loops, the loss) stays eager, and blocks of the same
structure share one graph (Dynamo traces modules inline and guards on their structure, not
their identity). So the number of graphs is the number of distinct block shapes, not of
blocks or loop iterations, and the recompile limit is raised to cover one graph per block
(a bound, never a reason to fall back to eager).

:class:`Compiler` counts graphs, graph breaks, frames that fell back to eager, and
recompiles after the first step; :meth:`Compiler.metrics` goes into the candidate's metrics.
A compile that fails is never silent: the trainer catches it, calls :meth:`Compiler.fallback`
and the candidate runs eager with the reason on one ``compile:`` log line (the engine writes
it to ``run.log``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters

BACKEND: Any = "inductor"  # what torch.compile lowers with (tests use "eager")
Log = Callable[[str], None]


def compile_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the compiler failed", not "the model failed"."""
    errors: list[type[BaseException]] = [torch._dynamo.exc.TorchDynamoException]
    try:
        from torch._inductor.exc import InductorError
        errors.append(InductorError)
    except ImportError:
        pass
    return tuple(errors)


def _frames() -> tuple[int, int]:
    f = counters["frames"]
    return int(f["total"]), int(f["ok"])


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


class Compiler:
    """Compiles ``model.blocks`` in place; one instance per candidate."""

    def __init__(self, model: nn.Module, log: Log | None = None, backend: Any = None):
        self.model, self.log = model, log or (lambda text: None)
        self.compiled = False
        self.reason: str | None = None
        self.steps = 0
        self.frames_after_first = 0
        torch._dynamo.reset()
        counters.clear()
        blocks = list(getattr(model, "blocks", []))
        config = torch._dynamo.config
        limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, limit, max(getattr(config, limit), 2 * len(blocks) + 8))
        for block in blocks:
            block.compile(backend=backend or BACKEND, dynamic=False)
        self.compiled = bool(blocks)

    def frames_ok(self) -> int:
        return _frames()[1]

    def after_step(self, frames_before: int) -> bool:
        """Book one training step; True when Dynamo compiled a frame during it."""
        total, ok = _frames()
        compiled = ok > frames_before
        if not self.compiled:  # fell back to eager (and said so)
            self.steps += 1
            return False
        if self.steps == 0:
            self._report_first_step(total, ok)
        elif compiled:
            self.frames_after_first += ok - frames_before
            self.log(f"compile: step {self.steps + 1} compiled {ok - frames_before} frame(s) "
                     "again (a recompile: the compile did not hold)")
        self.steps += 1
        return compiled

    def _report_first_step(self, total: int, ok: int) -> None:
        breaks = self.graph_breaks()
        text = (f"compile: {self.graphs()} graph(s) for {len(self.model.blocks)} block(s), "
                f"{breaks} graph break(s)")
        if total > ok:
            why = "; ".join(_first_line(k) for k in counters["unimplemented"]) or "unknown"
            text += f"; {total - ok} frame(s) run eager: {why}"
        self.log(text)

    def fallback(self, error: BaseException) -> None:
        """Undo the compile after ``error``: the candidate runs eager from here, and says so."""
        for block in getattr(self.model, "blocks", []):
            block._compiled_call_impl = None
        self.compiled = False
        cause = getattr(error, "inner_exception", None) or error  # BackendCompilerFailed's
        self.reason = f"{type(cause).__name__}: {_first_line(str(cause))}"
        self.log(f"compile: failed, this candidate runs eager ({self.reason})")
        torch._dynamo.reset()

    @contextlib.contextmanager
    def eager(self) -> Iterator[None]:
        """The blocks run eager inside (a deep copy made here is of eager blocks: a copied
        compiled block would still call the original's forward)."""
        blocks = list(getattr(self.model, "blocks", []))
        saved = [getattr(b, "_compiled_call_impl", None) for b in blocks]
        for b in blocks:
            b._compiled_call_impl = None
        try:
            yield
        finally:
            for b, impl in zip(blocks, saved, strict=True):
                b._compiled_call_impl = impl

    def graphs(self) -> int:
        return int(counters["stats"]["unique_graphs"])

    def graph_breaks(self) -> int:
        return int(sum(counters["graph_break"].values()))

    def metrics(self) -> dict[str, float]:
        """The candidate's compile figures so far: graphs, graph breaks and eager frames count
        every compile since the reset, training and evaluation (an eval pass, no autograd, is
        a graph of its own per block shape); recompiles count frames compiled during training
        steps after the first (0 when the compile holds)."""
        total, ok = _frames()
        return {"compiled": float(self.compiled), "compile_graphs": float(self.graphs()),
                "compile_graph_breaks": float(self.graph_breaks()),
                "compile_eager_frames": float(total - ok),
                "compile_recompiles": float(self.frames_after_first)}
