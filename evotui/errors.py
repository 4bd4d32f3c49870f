"""User-facing errors: one line naming the file, the field path and the fix; exit code 2."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Problem:
    """One thing wrong with an input: where (field path, optional line) and what is allowed."""

    path: str
    message: str
    line: int | None = None

    def render(self, source: str | None) -> str:
        where = source or ""
        if self.line is not None:
            where = f"{where}:{self.line}"
        parts = [part for part in (where, self.path, self.message) if part]
        return ": ".join(parts)


@dataclass
class UserError(Exception):
    """An error in what the user gave us. The CLI prints it without a traceback and exits 2."""

    problems: list[Problem]
    source: str | None = None
    exit_code: int = field(default=2)

    @classmethod
    def single(cls, message: str, *, path: str = "", source: str | None = None) -> UserError:
        return cls([Problem(path, message)], source)

    def render(self, limit: int = 5) -> str:
        lines = [p.render(self.source) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more problem(s)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()
