"""What a run trusts on disk: clean-up never follows a link, a damaged or empty run.db is one
line and exit 2 for every command (and never rewritten), a run whose creation a stop cut short
is started again rather than left unusable, non-UTF-8 names are one line, and a truncated or
bit-rotted ``train.init_checkpoint`` is refused before a run directory exists."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3

import pytest
import yaml

from evotui.engine import integrity
from evotui.engine.store import RunStore
from evotui.errors import UserError
from tests.conftest import ROOT
from tests.engine.test_engine_units import engine_with

TINY = ROOT / "configs" / "tiny.yaml"


def dominated(i: int) -> dict[str, float]:
    """c0000 dominates everyone: the frontier and the parent pool of size 1 are c0000."""
    return {"ppl_code": 10.0 + i, "ppl_text": 10.0 + i, "ppl_math": 10.0 + i,
            "passkey_acc": 0.1, "throughput": 100.0}


def test_cleanup_never_follows_a_link_out_of_the_run(tmp_path):
    eng = engine_with(tmp_path, lambda cid: ("done", dominated(int(cid[1:]))))
    asyncio.run(eng.run(1))
    outside = tmp_path / "outside" / "precious.safetensors"
    outside.parent.mkdir()
    outside.write_bytes(b"not the run's")
    linked, plain = (eng.store.candidate(c) for c in ("c0001", "c0002"))
    os.unlink(linked["checkpoint"])
    os.symlink(outside, linked["checkpoint"])  # someone linked a file into the checkpoint dir
    eng.cfg.evolution.population = 1  # only c0000 is needed now
    eng.options.cleanup_old_checkpoints = True
    eng.cleanup()
    assert os.path.islink(linked["checkpoint"]) and outside.read_bytes() == b"not the run's"
    assert eng.store.candidate("c0001")["checkpoint"]  # still recorded: it was not removed
    assert not os.path.exists(plain["checkpoint"])  # the run's own regular file is removed
    assert eng.store.candidate("c0002")["checkpoint"] is None
    assert os.path.isfile(eng.store.candidate("c0000")["checkpoint"])  # the frontier is kept


def test_remove_own_file_only_removes_the_expected_regular_file(tmp_path):
    own = tmp_path / "ckpt" / "c1.safetensors"
    own.parent.mkdir()
    own.write_bytes(b"x")
    elsewhere = tmp_path / "c1.safetensors"
    elsewhere.write_bytes(b"y")
    assert not integrity.remove_own_file(elsewhere, own)  # same name, another directory
    assert not integrity.remove_own_file(own, own.with_name("c2.safetensors"))
    assert integrity.remove_own_file(own, own) and not own.exists() and elsewhere.exists()
    assert not integrity.remove_own_file(own, own)  # already gone: nothing to do


def make_run(run_dir, candidates: int = 200) -> None:
    store = RunStore.create(run_dir, "x: 1\n", {"name": "t"})
    store.set_state("options", {})
    for i in range(candidates):  # enough rows for several pages
        store.add_candidate(f"c{i:04d}", generation=0, spec={"pad": "x" * 200})
    store.close()


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_2(result) -> str:
    code, out, err = result
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "internal error" not in err, err
    return err


@pytest.mark.parametrize("damage", ["empty", "header", "page"])
def test_a_damaged_run_db_is_one_line_and_never_written(tmp_path, run_cli, damage):
    run_dir = tmp_path / "run"
    make_run(run_dir)
    db = run_dir / "run.db"
    data = bytearray(db.read_bytes())
    if damage == "empty":
        data = bytearray()
    elif damage == "header":
        data[:16] = b"\0" * 16
    else:
        page = int.from_bytes(data[16:18], "big")
        assert len(data) > 4 * page
        data[3 * page + 8: 4 * page] = os.urandom(page - 8)  # a b-tree page's cells
    db.write_bytes(bytes(data))
    before = digest(db)
    for args in (("status", run_dir), ("pause", run_dir, "c0001"), ("kill", run_dir, "c0001"),
                 ("run", "--resume", run_dir, "--device", "cpu")):
        err = one_line_2(run_cli(*args))
        assert "run.db" in err and "restore run.db" in err
    assert digest(db) == before


def test_a_creation_cut_short_is_started_again_not_resumed(tmp_path, run_cli):
    run_dir = tmp_path / "run"
    RunStore.create(run_dir, "x: 1\n", {"name": "t"}).close()  # stopped before its options
    err = one_line_2(run_cli("run", "--resume", run_dir, "--device", "cpu"))
    assert "creation was interrupted" in err and "--run-dir" in err
    integrity.prepare_new_run_dir(run_dir)  # what `evotui run --run-dir` does first
    assert not (run_dir / "run.db").exists() and not (run_dir / "config.yaml").exists()
    (run_dir / "run.db").write_bytes(b"")  # stopped right after sqlite made the file
    integrity.prepare_new_run_dir(run_dir)
    assert not (run_dir / "run.db").exists()
    make_run(run_dir, 1)  # a complete run is never replaced
    with pytest.raises(UserError, match="already holds a run"):
        integrity.prepare_new_run_dir(run_dir)
    assert RunStore.open(run_dir, readonly=True).count_candidates() == 1


def test_the_store_is_created_before_its_options_in_one_commit(tmp_path):
    """The options are the mark of a complete creation: they are the last key written."""
    run_dir = tmp_path / "run"
    make_run(run_dir, 0)
    conn = sqlite3.connect(run_dir / "run.db")
    assert conn.execute("SELECT value FROM run WHERE key = 'options'").fetchone()
    conn.close()


def test_non_utf8_names_are_one_line(tmp_path, run_cli):
    bad_dir = os.fsdecode(os.fsencode(str(tmp_path)) + b"/run\xff")
    err = one_line_2(run_cli("status", bad_dir))
    assert "not valid UTF-8" in err and "run\\xff" in err
    err = one_line_2(run_cli("run", TINY, "--run-dir", bad_dir, "--device", "cpu"))
    assert "not valid UTF-8" in err
    assert not os.path.exists(bad_dir)
    run_dir = tmp_path / "run"
    make_run(run_dir, 1)
    err = one_line_2(run_cli("pause", run_dir, "c\udcff"))
    assert "not valid UTF-8" in err


def config_with_init(tmp_path, checkpoint) -> str:
    data = yaml.safe_load(TINY.read_text())
    data["train"]["init_checkpoint"] = str(checkpoint)
    path = tmp_path / "seeded.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    from evotui.dsl import load
    from evotui.model.lm import build_model
    from evotui.train.checkpoint import save

    cfg = load(TINY)
    path = tmp_path / "seed.safetensors"
    save(path, build_model(cfg.model, cfg.data.seq_len), meta={"step": 0})
    return path


@pytest.mark.parametrize("damage", ["truncated", "bit rot", "other genome"])
def test_a_bad_init_checkpoint_is_refused_before_the_run_exists(tmp_path, run_cli,
                                                                tiny_checkpoint, damage):
    data = bytearray(tiny_checkpoint.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "bit rot":
        data[-4096:] = b"\xff" * 4096  # the last tensor's values: NaN in float32
    else:
        import torch
        from safetensors.torch import save_file

        save_file({"model.other.weight": torch.zeros(2, 2)}, str(tiny_checkpoint),
                  metadata={"format": "evotui-checkpoint", "version": "1", "meta": "{}",
                            "model": '{"aliases": {}}'})
        data = bytearray(tiny_checkpoint.read_bytes())
    tiny_checkpoint.write_bytes(bytes(data))
    run_dir = tmp_path / "run"
    err = one_line_2(run_cli("run", config_with_init(tmp_path, tiny_checkpoint), "--run-dir",
                             run_dir, "--device", "cpu", "--generations", "1"))
    assert "train.init_checkpoint" in err and str(tiny_checkpoint) in err
    assert "export-seed" in err  # the fix
    assert not run_dir.exists()


def test_a_whole_init_checkpoint_of_the_genome_passes(tiny_checkpoint):
    from evotui.dsl import load

    cfg = load(TINY)
    cfg.train.init_checkpoint = str(tiny_checkpoint)
    found = integrity.check_init_checkpoint(cfg, str(TINY))
    assert found["matched"] > 0 and found["fresh"] == 0


def test_a_command_to_a_stopped_run_says_so_unless_queued(tmp_path, run_cli):
    run_dir = tmp_path / "run"
    make_run(run_dir, 2)
    with RunStore.open(run_dir) as store:
        store.set_engine_state("stopped")
    err = one_line_2(run_cli("pause", run_dir, "c0001"))
    assert "the run is stopped" in err and "--resume" in err and "--queue" in err
    with RunStore.open(run_dir, readonly=True) as store:
        assert store.pending_commands() == []  # nothing fires at the next resume
    code, out, err = run_cli("pause", run_dir, "c0001", "--queue")
    assert code == 0 and "when the run is resumed" in out
    with RunStore.open(run_dir) as store:
        assert [c["action"] for c in store.pending_commands()] == ["pause"]
        store.set_engine_state("running")  # a live engine (fresh heartbeat) takes commands
    code, out, err = run_cli("kill", run_dir, "c0000")  # no engine answers within its wait:
    assert code == 0 and "pending: the engine acts" in out  # the command stays, said so
