"""The offline corpus evotui ships, built from what every Python installation has.

- ``builtin:code``: the standard library's ``.py`` files, one document per file;
- ``builtin:prose``: docstrings of stdlib modules, classes and functions, one per document;
- ``builtin:math``: generated arithmetic (seeded): sums, products, integer division,
  multi-step expressions and small word problems, each with its worked answer.

Everything is iterated in a fixed order (sorted paths, a seeded generator), so the same
Python version always yields the same documents. ``CAPS`` bounds each corpus in characters.
"""

from __future__ import annotations

import ast
import hashlib
import random
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

VERSION = 1  # bump when what a builtin yields changes (it is part of the token-cache key)
CAPS: dict[str, int | None] = {
    "builtin:code": 20_000_000,
    "builtin:prose": None,  # all docstrings (about 1.3 MB)
    "builtin:math": 5_000_000,
}
MIN_DOCSTRING = 200
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files, sorted, without tests and installed packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for f in root.rglob("*.py"):
        parts = f.relative_to(root).parts[:-1]
        if not any(p in SKIP_DIRS for p in parts):
            files.append(f)
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def _read_sources() -> Iterator[str]:
    for f in stdlib_files():
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text.strip():
            yield text


def _capped(docs: Iterator[str], max_chars: int | None) -> Iterator[str]:
    total = 0
    for doc in docs:
        if max_chars is not None and total + len(doc) > max_chars:
            return
        total += len(doc)
        yield doc


def code_documents(max_chars: int | None = CAPS["builtin:code"]) -> Iterator[str]:
    """Standard-library source files, one document each."""
    return _capped(_read_sources(), max_chars)


DocOwner = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def _definitions(tree: ast.Module) -> Iterator[DocOwner]:
    """The module, classes and functions in source order (statements only: fast)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, DocOwner):
            yield node
        children = [c for c in ast.iter_child_nodes(node)
                    if isinstance(c, ast.stmt | ast.excepthandler | ast.match_case)]
        stack.extend(reversed(children))


def _docstrings(min_chars: int) -> Iterator[str]:
    seen: set[bytes] = set()
    for text in _read_sources():
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        for node in _definitions(tree):
            doc = ast.get_docstring(node)
            if not doc or len(doc) < min_chars:
                continue
            digest = hashlib.blake2b(doc.encode(), digest_size=16).digest()
            if digest not in seen:  # copied docstrings would leak into held-out text
                seen.add(digest)
                yield doc


def prose_documents(max_chars: int | None = CAPS["builtin:prose"],
                    min_chars: int = MIN_DOCSTRING) -> Iterator[str]:
    """Docstrings of stdlib modules, classes and functions (deduplicated), one each."""
    return _capped(_docstrings(min_chars), max_chars)


# --- builtin:math --------------------------------------------------------------------------

NAMES = ("Ada", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kofi",
         "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq")
ITEMS = ("apples", "marbles", "books", "coins", "stickers", "pencils", "shells", "cards",
         "stamps", "beads")
OPS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "//": lambda a, b: a // b,
    "%": lambda a, b: a % b,
}


def _number(rng: random.Random) -> int:
    return rng.randint(0, 10 ** rng.randint(1, 3))


def _binary(rng: random.Random) -> str:
    op = rng.choice(tuple(OPS))
    a, b = _number(rng), _number(rng)
    if op in ("//", "%"):
        b = max(b, 1)
    if op == "*":
        b = rng.randint(0, 99)
    return f"Q: {a} {op} {b} = ?\nA: {OPS[op](a, b)}"


def _chain(rng: random.Random) -> str:
    value = rng.randint(1, 99)
    expr, steps = str(value), []
    for i in range(rng.randint(2, 4)):
        op = rng.choice(("+", "-", "*", "//", "%") if i else ("+", "-", "*"))
        b = rng.randint(2, 12) if op in ("*", "//", "%") else rng.randint(1, 99)
        new = OPS[op](value, b)
        steps.append(f"{value} {op} {b} = {new}")
        expr = f"({expr}) {op} {b}" if i else f"{expr} {op} {b}"
        value = new
    return f"Q: {expr} = ?\nA: " + ". ".join(steps) + f". The answer is {value}."


def _word(rng: random.Random) -> str:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(5, 90), rng.randint(1, 60)
        c = rng.randint(1, a + b)
        return (f"Q: {name} has {a} {item} and gets {b} more, then gives {c} away. How many "
                f"{item} does {name} have now?\nA: {a} + {b} = {a + b}. {a + b} - {c} = "
                f"{a + b - c}. The answer is {a + b - c}.")
    if kind == 1:
        a, b = rng.randint(2, 30), rng.randint(2, 25)
        return (f"Q: {name} fills {a} boxes with {b} {item} in each box. How many {item} is "
                f"that?\nA: {a} * {b} = {a * b}. The answer is {a * b}.")
    if kind == 2:
        a, b = rng.randint(10, 500), rng.randint(2, 12)
        return (f"Q: {name} shares {a} {item} equally among {b} friends. How many does each "
                f"friend get, and how many are left over?\nA: {a} // {b} = {a // b} and "
                f"{a} % {b} = {a % b}. Each friend gets {a // b} and {a % b} are left over.")
    a, b, c = rng.randint(20, 120), rng.randint(2, 9), rng.randint(1, 99)
    return (f"Q: A train travels {a} km each hour for {b} hours, then {c} km more. How far "
            f"does it travel?\nA: {a} * {b} = {a * b}. {a * b} + {c} = {a * b + c}. "
            f"The answer is {a * b + c} km.")


def _math_docs(seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    makers = (_binary, _binary, _chain, _word)
    while True:
        yield "\n\n".join(rng.choice(makers)(rng) for _ in range(rng.randint(4, 12)))


def math_documents(max_chars: int | None = CAPS["builtin:math"], seed: int = 0) -> Iterator[str]:
    """Generated arithmetic documents: 4 to 12 worked problems each, seeded."""
    if max_chars is None:
        raise ValueError("builtin:math is generated without end; give max_chars")
    return _capped(_math_docs(seed), max_chars)


BUILDERS: dict[str, Callable[[int | None], Iterator[str]]] = {
    "builtin:code": code_documents,
    "builtin:prose": prose_documents,
    "builtin:math": math_documents,
}


def documents(name: str, max_chars: int | None = None) -> Iterator[str]:
    """The documents of a builtin corpus, at most ``max_chars`` (default: ``CAPS[name]``)."""
    return BUILDERS[name](max_chars if max_chars is not None else CAPS[name])
