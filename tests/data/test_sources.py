"""Shards resolved into sources: builtin corpora, local files, dataset folders and Hub names
through the same streaming path, refusals as one line."""

from __future__ import annotations

import json
import os
import socket

import pytest

from evotui.data import sources
from evotui.dsl.run import ShardSpec
from evotui.errors import UserError
from tests.data.conftest import random_docs, write_jsonl, write_parquet


@pytest.fixture
def no_network(monkeypatch):
    """Records every attempt to open a connection (and refuses it): failing fast offline
    means never trying the network, so never waiting on it."""
    tried: list[object] = []

    def refuse(*args, **kwargs):
        tried.append(args[1:] or args)
        raise OSError("the network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse(None, *a))
    return tried

WHERE = "data.shards[1]"


def docs_of(shard: ShardSpec) -> list[str]:
    src = sources.resolve(shard, WHERE)
    src.check()
    return [text for text, _ in src.documents()]


def error_of(shard: ShardSpec) -> str:
    with pytest.raises(UserError) as e:
        sources.resolve(shard, WHERE).check()
    text = e.value.render()
    assert len(e.value.problems) == 1 and "\n" not in text
    assert WHERE in text
    return text


def test_builtin(small_caps):
    docs = docs_of(ShardSpec(name="builtin:math"))
    assert 0 < sum(map(len, docs)) <= small_caps["builtin:math"]


def test_jsonl_detects_content_field(tmp_path):
    want = random_docs(20, seed=1)
    path = write_jsonl(tmp_path / "a.jsonl", want, field="content")
    assert docs_of(ShardSpec(path=str(path))) == want


def test_explicit_text_field(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"text": "not this", "body2": f"doc {i}"}) + "\n"
                            for i in range(5)))
    assert docs_of(ShardSpec(path=str(path), text_field="body2")) == [f"doc {i}"
                                                                     for i in range(5)]
    assert docs_of(ShardSpec(path=str(path)))[0] == "not this"
    msg = error_of(ShardSpec(path=str(path), text_field="missing"))
    assert "'missing'" in msg and "body2" in msg and "text" in msg


def test_parquet(tmp_path):
    want = random_docs(12, seed=2)
    path = write_parquet(tmp_path / "a.parquet", want, field="text")
    assert docs_of(ShardSpec(path=str(path))) == want


def test_txt_is_one_document_per_paragraph(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first para\nstill first\n\nsecond\n\n\n\nthird\n")
    assert docs_of(ShardSpec(path=str(path))) == ["first para\nstill first", "second", "third"]


def test_csv_and_question_answer(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("n,body\n1,hello there\n2,second row\n")
    assert docs_of(ShardSpec(path=str(csv))) == ["hello there", "second row"]
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps([{"question": "2+2?", "answer": "4"},
                              {"question": "3+3?", "answer": "6"}]))
    assert docs_of(ShardSpec(path=str(qa))) == ["2+2?\n4", "3+3?\n6"]


def test_only_string_column_is_used_and_ambiguity_is_an_error(tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text('{"n": 1, "prose": "only text"}\n')
    assert docs_of(ShardSpec(path=str(one))) == ["only text"]
    two = tmp_path / "two.jsonl"
    two.write_text('{"a": "x", "b": "y"}\n')
    msg = error_of(ShardSpec(path=str(two)))
    assert "text_field" in msg and "a (text)" in msg and "b (text)" in msg


def test_file_errors(tmp_path):
    assert "no such file" in error_of(ShardSpec(path=str(tmp_path / "nope.jsonl")))
    (tmp_path / "x.xml").write_text("<a/>")
    assert "unsupported file type" in error_of(ShardSpec(path=str(tmp_path / "x.xml")))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "empty" in error_of(ShardSpec(path=str(empty)))
    blank = tmp_path / "blank.csv"
    blank.write_text("text\n")
    assert "no rows" in error_of(ShardSpec(path=str(blank)))


def test_unknown_hub_dataset_fails_fast_offline(offline, no_network):
    shard = ShardSpec(name="evotui-test/no-such-dataset", config="en")
    msg = error_of(shard)
    assert no_network == []  # it never tried (and waited on) the network
    assert "evotui-test/no-such-dataset" in msg
    assert "HF_DATASETS_OFFLINE=1" in msg and "path:" in msg and "builtin:" in msg


def test_identity_follows_the_file(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ["one", "two"])
    shard = ShardSpec(path=str(path))
    first = sources.resolve(shard, WHERE).identity()
    assert first == sources.resolve(shard, WHERE).identity()
    write_jsonl(path, ["one", "two", "three"])
    os.utime(path, ns=(1, 1))
    assert sources.resolve(shard, WHERE).identity() != first
    assert sources.resolve(ShardSpec(path=str(path), text_field="content"), WHERE).identity() \
        != sources.resolve(shard, WHERE).identity()


def test_identity_of_hub_and_builtin():
    hub = ShardSpec(name="org/set", config="c")
    assert sources.resolve(hub, WHERE, "v1").identity()["revision"] == "v1"
    v2 = hub.model_copy(update={"revision": "v2"})
    assert sources.resolve(v2, WHERE, "v1").identity()["revision"] == "v2"
    assert "python" in sources.resolve(ShardSpec(name="builtin:code"), WHERE).identity()


def test_unreachable_hub_fails_fast_without_offline_env(monkeypatch, offline, no_network):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setattr(sources, "hub_reachable", lambda: False)
    msg = error_of(ShardSpec(name="evotui-test/also-missing"))
    assert no_network == []  # once the hub is known unreachable, nothing waits on it
    assert "not reachable" in msg


def test_dataset_name_can_be_a_local_dataset_folder(tmp_path, offline):
    folder = tmp_path / "myset"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ["first doc", "second doc"], field="article")
    write_jsonl(folder / "validation.jsonl", ["held doc"], field="article")
    assert docs_of(ShardSpec(name=str(folder))) == ["first doc", "second doc"]
    assert docs_of(ShardSpec(name=str(folder), split="validation")) == ["held doc"]
    msg = error_of(ShardSpec(name=str(folder), split="test"))
    assert "has no split 'test'; set split: to one of train, validation" in msg


def test_a_bad_row_is_a_user_error(tmp_path, monkeypatch):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n{broken\n")
    shard = ShardSpec(path=str(path))
    with pytest.raises(UserError, match=r"data.shards\[1\]: path .*bad.jsonl: cannot read row 2"):
        docs_of(shard)  # found while reading, however far into the file
