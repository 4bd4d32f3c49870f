"""The builtin corpus: stdlib code, stdlib docstrings, generated arithmetic; fixed order, capped."""

from __future__ import annotations

import ast
import re
from itertools import islice

from evotui.data import corpus


def test_stdlib_files_sorted_without_tests_or_site_packages():
    files = corpus.stdlib_files()
    assert len(files) > 100
    names = [f.as_posix() for f in files]
    assert not any("/site-packages/" in n or "/test/" in n or "/tests/" in n for n in names)
    assert any(n.endswith("/json/decoder.py") for n in names)
    assert files == sorted(files, key=lambda f: f.as_posix())


def test_code_is_python_source_capped_and_deterministic():
    docs = list(corpus.code_documents(max_chars=200_000))
    assert docs == list(corpus.code_documents(max_chars=200_000))
    assert 0 < sum(map(len, docs)) <= 200_000
    assert len(docs) > 3
    for doc in docs[:5]:
        ast.parse(doc)  # whole files, one per document


def test_prose_is_docstrings_long_unique_and_capped():
    docs = list(corpus.prose_documents(max_chars=50_000))
    assert docs == list(corpus.prose_documents(max_chars=50_000))
    assert sum(map(len, docs)) <= 50_000
    assert len(docs) >= 10
    assert all(len(d) >= corpus.MIN_DOCSTRING for d in docs)
    assert len(set(docs)) == len(docs)
    assert not any(d.lstrip().startswith(("def ", "class ", "import ")) for d in docs)


def test_math_is_seeded_and_capped():
    a = list(corpus.math_documents(max_chars=20_000, seed=0))
    assert a == list(corpus.math_documents(max_chars=20_000, seed=0))
    assert a != list(corpus.math_documents(max_chars=20_000, seed=1))
    assert 19_000 < sum(map(len, a)) <= 20_000
    assert all(d.startswith("Q: ") for d in a)


def test_math_answers_are_right():
    problems = [p for doc in islice(corpus.math_documents(), 200) for p in doc.split("\n\n")]
    kinds = {"binary": 0, "chain": 0, "word": 0}
    for p in problems:
        q, a = p.split("\nA: ")
        if m := re.fullmatch(r"Q: (-?\d+) (\+|-|\*|//|%) (-?\d+) = \?", q):
            assert int(a) == eval(f"{m[1]} {m[2]} {m[3]}")  # our own digits
            kinds["binary"] += 1
            continue
        for step in re.finditer(r"(-?\d+) (\+|-|\*|//|%) (-?\d+) = (-?\d+)", a):
            assert int(step[4]) == eval(f"{step[1]} {step[2]} {step[3]}")
        if m := re.fullmatch(r"Q: ([-\d ()+*/%]+) = \?", q):
            assert a.endswith(f"The answer is {eval(m[1])}.")
            kinds["chain"] += 1
        else:
            kinds["word"] += 1
    assert min(kinds.values()) > 20, kinds


def test_documents_uses_caps(monkeypatch):
    monkeypatch.setitem(corpus.CAPS, "builtin:math", 5_000)
    assert sum(map(len, corpus.documents("builtin:math"))) <= 5_000
    assert sum(map(len, corpus.documents("builtin:math", max_chars=2_000))) <= 2_000
