"""Config files a user may be handed: nested aliases (a "billion laughs") and huge files are
refused in one line, exit 2, before anything walks or validates them."""

from __future__ import annotations

from pathlib import Path

import pytest

from evotui.dsl import load, loader
from evotui.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_nested_aliases_are_refused_in_one_line(tmp_path, run_cli):
    path = tmp_path / "laughs.yaml"
    path.write_text(laughs())
    assert len(path.read_bytes()) < 600  # small file, 9**9 values once expanded
    code, out, err = run_cli("validate", path)
    assert code == 2
    assert err.count("\n") == 1 and "laughs.yaml:" in err and "aliases expand" in err


def test_a_recursive_alias_is_refused_not_walked_forever(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("model: &m\n  blocks: [*m]\n")
    with pytest.raises(UserError, match="aliases expand"):
        load(path)


def test_plain_aliases_still_work():
    """gpt2_124m repeats one block with an alias twelve times."""
    assert "*block" in (ROOT / "configs" / "gpt2_124m.yaml").read_text()
    cfg = load(ROOT / "configs" / "gpt2_124m.yaml")
    assert len(cfg.model.blocks) == 12


def test_a_config_over_the_size_cap_is_refused_before_it_is_read(tmp_path, run_cli,
                                                                 monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_text((ROOT / "configs" / "tiny.yaml").read_text()
                    + "#" * (loader.MAX_CONFIG_BYTES + 10) + "\n")

    def no_reading(*a, **k):
        raise AssertionError("the oversized file was read")

    monkeypatch.setattr(Path, "read_text", no_reading)
    code, out, err = run_cli("validate", path)
    assert code == 2
    assert err.count("\n") == 1 and "big.yaml: the file is 4.0 MiB" in err
    with pytest.raises(UserError, match="at most 4 MiB"):
        loader.read_yaml("x: 1\n" + " " * loader.MAX_CONFIG_BYTES, "text")
