"""Tokenizers: bytes, a locally trained BPE (cached), tokenizer.json files, offline errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from evotui.data.tokenizers import ByteTokenizer, check_vocab, get_tokenizer, train_bpe
from evotui.errors import UserError
from tests.data.conftest import random_docs

TEXT = "def f(x):\n    return x  # héllo wörld 🙂\n\n\tπ ≈ 3.14159\n"


def never():
    raise AssertionError("a cached tokenizer must not read its training texts")


def test_byte_round_trip():
    tok = get_tokenizer("byte", None, cache_dir=None)  # byte needs no cache
    assert (tok.name, tok.vocab_size, tok.eot) == ("byte", 257, 256)
    ids = tok.encode(TEXT)
    assert ids == list(TEXT.encode("utf-8"))
    assert tok.decode(ids) == TEXT
    assert tok.encode_batch([TEXT, "", "a"]) == [ids, [], [97]]
    assert tok.decode([*ids, tok.eot]) == TEXT


def test_packed_documents_end_with_eot():
    tok = ByteTokenizer()
    packed = tok.encode_packed(["ab", "", "c"])
    assert packed.tolist() == [97, 98, 256, 256, 99, 256]
    default = super(ByteTokenizer, tok).encode_packed(["ab", "", "c"])  # the generic path
    assert np.array_equal(packed, default)


def test_bpe_trains_caches_and_round_trips(tmp_path):
    docs = random_docs(300, seed=3)
    tok = get_tokenizer("bpe:400", lambda: docs, tmp_path, sources_key="k1")
    assert tok.name == "bpe:400" and 258 <= tok.vocab_size <= 400
    assert tok.decode([tok.eot]) == ""
    files = list(tmp_path.glob("bpe400-*.json"))
    assert len(files) == 1
    for text in (TEXT, docs[0], ""):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert all(0 <= i < tok.vocab_size for i in ids)
    assert len(tok.encode(docs[0])) < len(docs[0].encode())  # it learned merges

    again = get_tokenizer("bpe:400", never, tmp_path, sources_key="k1")
    assert again.fingerprint == tok.fingerprint and again.encode(TEXT) == tok.encode(TEXT)
    other = get_tokenizer("bpe:400", lambda: docs[:50], tmp_path, sources_key="k2")
    assert len(list(tmp_path.glob("bpe400-*.json"))) == 2
    assert other.fingerprint != tok.fingerprint


def test_bpe_without_key_hashes_its_texts(tmp_path):
    docs = random_docs(100, seed=4)
    a = get_tokenizer("bpe:300", lambda: docs, tmp_path)
    b = get_tokenizer("bpe:300", lambda: docs, tmp_path)
    assert a.fingerprint == b.fingerprint
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_bpe_too_small_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="data.tokenizer"):
        get_tokenizer("bpe:100", lambda: ["x"], tmp_path)


def test_tokenizer_json_by_path_and_folder(tmp_path):
    path = tmp_path / "tok" / "tokenizer.json"
    path.parent.mkdir()
    path.write_text(train_bpe(random_docs(100, seed=5), 300))
    for name in (str(path), str(path.parent)):
        tok = get_tokenizer(name, None, tmp_path)
        assert tok.decode(tok.encode(TEXT)) == TEXT
        assert tok.eot == tok.backend.token_to_id("<|endoftext|>")
    assert pickle.loads(pickle.dumps(tok)).encode(TEXT) == tok.encode(TEXT)


def test_tokenizer_without_end_token_gets_an_extra_id(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "words.json"
    path.write_text(backend.to_str())
    tok = get_tokenizer(str(path), None, tmp_path)
    assert (tok.vocab_size, tok.eot) == (4, 3)
    assert tok.encode_packed(["a b", "b"]).tolist() == [0, 1, 3, 1, 3]


def test_gpt2_offline_is_a_clear_error(offline, tmp_path):
    for name in ("gpt2", "some-org/some-model", str(tmp_path / "missing.json"), str(tmp_path)):
        with pytest.raises(UserError) as e:
            get_tokenizer(name, None, tmp_path)
        text = e.value.render()
        assert "\n" not in text and "data.tokenizer" in text
        assert "byte" in text and "bpe:" in text and "tokenizer.json" in text
    assert "not available offline" in text or "no tokenizer.json" in text
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="is not a tokenizer.json"):
        get_tokenizer(str(bad), None, tmp_path)


def test_check_vocab():
    tok = ByteTokenizer()
    check_vocab(tok, 257)
    check_vocab(tok, 50304)
    with pytest.raises(UserError) as e:
        check_vocab(tok, 256)
    assert e.value.render().endswith(
        "model.emb.vocab: 256 is smaller than tokenizer byte's vocabulary (257); "
        "use at least 257")


def test_a_hub_name_is_fetched_when_the_hub_is_reachable(tmp_path, monkeypatch):
    import huggingface_hub

    from evotui.data import sources

    served = tmp_path / "served-tokenizer.json"
    served.write_text(train_bpe(random_docs(50, seed=2), 300))
    asked: list[bool] = []

    def download(repo_id, filename, local_files_only=False, **kw):
        asked.append(local_files_only)
        if local_files_only:  # not in the local cache yet
            raise FileNotFoundError(repo_id)
        assert (repo_id, filename) == ("org/tok", "tokenizer.json")
        return str(served)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(sources, "hub_reachable", lambda: True)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    tok = get_tokenizer("org/tok", None, tmp_path)
    assert asked == [True, False] and tok.vocab_size == 300
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: one line naming the fix, no download
    asked.clear()
    with pytest.raises(UserError, match=r"data.tokenizer: org/tok .*offline mode is on.*"
                                        r"evotui data prepare"):
        get_tokenizer("org/tok", None, tmp_path)
    assert asked == [True]
