"""flash-attn that is not installed says nothing; one that is installed but broken in any way
(its compiled extension missing, a wheel built for another torch) says why in one line."""

from __future__ import annotations

import sys

import pytest

from evotui.model.backends import flash


@pytest.mark.parametrize("body,quiet", [
    (None, True),  # no flash_attn package at all
    ("import flash_attn_2_cuda\n", False),  # the wheel's extension is missing
    ("raise RuntimeError('undefined symbol: _ZN3c10')\n", False),
])
def test_flash_attn_import_failures(tmp_path, monkeypatch, caplog, body, quiet) -> None:
    if body is not None:
        (tmp_path / "flash_attn").mkdir()
        (tmp_path / "flash_attn" / "__init__.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "flash_attn", raising=False)
    if body is None:  # hide any flash_attn the environment has
        monkeypatch.setitem(sys.modules, "flash_attn", None)
    flash.flash_fn.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="evotui.attention"):
            assert flash.flash_fn() is None
            assert flash.flash_fn() is None
        lines = [r.getMessage() for r in caplog.records]
        if quiet:
            assert lines == []
        else:
            assert len(lines) == 1 and lines[0].startswith("flash-attn unavailable"), lines
    finally:
        flash.flash_fn.cache_clear()
