"""Training throughput: the one definition the engine's ``throughput`` objective and
``evotui bench train`` share.

Throughput is tokens per second over **steady-state** training steps only. A step is warm-up,
not steady, when it is among the first ``WARMUP_STEPS`` (a benchmark may ask for more) of a
trainer (lazy initialisation,
allocator growth, the first kernels) or when Dynamo compiled anything during it. Warm-up steps
are reported beside the figure (``warmup_s``), and so is the compile time, the seconds the
compiling steps took beyond a steady step each (``compile_s``). Only when no step is steady
(a run of a single step) does the figure fall back to every step, and ``steady_steps`` = 0
says so.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

WARMUP_STEPS = 1


def perf_counter() -> float:
    """The clock steps are timed with (a seam for tests)."""
    return time.perf_counter()


@dataclass
class StepClock:
    warmup_steps: int = WARMUP_STEPS
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    steady_steps: int = 0
    steady_tokens: int = 0
    steady_seconds: float = 0.0
    compile_steps: int = 0
    compile_step_seconds: float = 0.0

    def record(self, seconds: float, tokens: int, compiled: bool) -> None:
        """One training step of ``seconds`` over ``tokens``; ``compiled``: Dynamo compiled
        something during it."""
        warm = self.steps < self.warmup_steps or compiled
        self.steps += 1
        self.tokens += tokens
        self.seconds += seconds
        if compiled:
            self.compile_steps += 1
            self.compile_step_seconds += seconds
        if not warm:
            self.steady_steps += 1
            self.steady_tokens += tokens
            self.steady_seconds += seconds

    def tokens_per_s(self) -> float:
        if self.steady_steps and self.steady_seconds > 0:
            return self.steady_tokens / self.steady_seconds
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def step_s(self) -> float | None:
        """Mean seconds of a steady step (None before one)."""
        return self.steady_seconds / self.steady_steps if self.steady_steps else None

    def compile_s(self) -> float:
        steady = self.step_s() or 0.0
        return max(0.0, self.compile_step_seconds - self.compile_steps * steady)

    def warmup_s(self) -> float:
        return self.seconds - self.steady_seconds

    def metrics(self) -> dict[str, float]:
        return {"throughput": self.tokens_per_s(), "steady_steps": float(self.steady_steps),
                "warmup_s": self.warmup_s(), "compile_s": self.compile_s()}

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def restore(cls, state: dict[str, Any] | None) -> StepClock:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in (state or {}).items() if k in names})
