"""The validate / schema / --version commands as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml

from evotui import __version__
from tests.conftest import CONFIGS, ROOT

SEED = ROOT / "configs" / "scalehop_xover-68-8a93.yaml"


def test_version(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"evotui {__version__}"


def test_validate_seed_json_reports_the_estimate(run_cli):
    code, out, err = run_cli("validate", SEED, "--json")
    assert code == 0, err
    data = json.loads(out)
    for key in ("params_total", "params_active", "flops_per_token", "kv_bytes_per_token"):
        assert data[key] > 0
    # the reference seed: 12 blocks, a ~0.5B hybrid whose MoE makes active < total
    assert data["layers"] == 12 and data["moe_blocks"] == 3 and data["ssm_blocks"] == 3
    assert 400e6 < data["params_active"] < data["params_total"] < 650e6
    assert set(data["patterns"]) == {"local_global", "local_block", "dilated", "none"}
    assert data["params_built"] == data["params_total"]  # the model really built from it
    # 12 attention layers x 12 KV heads x 64 x (K and V) x 2 bytes
    assert data["kv_bytes_per_token"] == 12 * 12 * 64 * 2 * 2


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(run_cli, config):
    code, out, err = run_cli("validate", config)
    assert code == 0, err
    assert "valid" in out.splitlines()[0]


def test_validate_text_summary_lists_blocks(run_cli):
    code, out, _ = run_cli("validate", ROOT / "configs" / "tiny.yaml")
    assert code == 0
    for word in ("params", "FLOPs/token", "KV cache", "local_global", "retro", "blocks 2..3 x2"):
        assert word in out


def test_schema_validates_every_config(run_cli, tmp_path):
    target = tmp_path / "schema.json"
    code, _, _ = run_cli("schema", "--out", target)
    assert code == 0
    schema = json.loads(target.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for config in CONFIGS:
        jsonschema.validate(yaml.safe_load(config.read_text()), schema)
    # and it catches what an editor should flag: an unknown key deep in a block
    bad = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    bad["model"]["blocks"][0]["attn"]["heads_"] = 4
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_schema_to_stdout_is_json(run_cli):
    code, out, _ = run_cli("schema")
    assert code == 0 and json.loads(out)["title"] == "evotui run config"


def test_console_script_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    proc = subprocess.run([sys.executable, "-m", "evotui", "validate", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and "YAML syntax error" in proc.stderr
    debug = subprocess.run([sys.executable, "-m", "evotui", "validate", str(bad), "--debug"],
                           capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_missing_file(run_cli, tmp_path):
    code, _, err = run_cli("validate", tmp_path / "nope.yaml")
    assert code == 2 and "no such file" in err


def test_dsl_layer_does_not_import_torch():
    code = ("import sys; from evotui.dsl import load, estimate\n"
            f"c = load({str(SEED)!r}); estimate(c.model, c.data.seq_len)\n"
            "assert 'torch' not in sys.modules, 'the DSL imported torch'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_bad_device_leaves_no_run_directory(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = run_cli("run", "--device", "tpu", "--run-dir", run_dir)
    assert code == 2 and "--device" in err and "auto, cpu or cuda" in err
    assert len(err.strip().splitlines()) == 1
    assert not run_dir.exists()


@pytest.mark.parametrize("args, words", [
    (["run", "--population", "1"], "--population"),
    (["run", "--bogus"], "--bogus"),
    (["frontier"], "SOURCE"),
    (["nosuch"], "nosuch"),
])
def test_a_usage_error_is_one_line_and_exit_2(run_cli, args, words):
    code, _, err = run_cli(*args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and words.lower() in err.lower(), err
    assert "internal error" not in err and "Traceback" not in err


def _run_with_out(tmp_path):
    """A stored run started with --out elsewhere: two finished candidates, one dominated."""
    from evotui.engine.exports import write_frontier, write_lineage
    from evotui.engine.store import RunStore

    run_dir, out = tmp_path / "run", tmp_path / "elsewhere" / "front.json"
    cfg = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    objectives = {"loss": "min", "params_total": "min"}
    with RunStore.create(run_dir, yaml.safe_dump(cfg), {"name": "out"}) as store:
        store.set_state("objectives", objectives)
        store.set_state("options", {"frontier_path": str(out)})
        for cid, loss, params in (("c0000", 3.0, 100.0), ("c0001", 3.5, 200.0)):
            store.add_candidate(cid, generation=0, spec=cfg["model"], parents=[],
                                operator="seed", status="done", rung=1, step=4, total_steps=4,
                                metrics={"loss": loss, "params_total": params})
        write_frontier(store, out, objectives)
        write_lineage(store, run_dir / "lineage.json")
    return run_dir, out


def test_frontier_of_a_run_reads_its_out_file(run_cli, tmp_path):
    run_dir, out = _run_with_out(tmp_path)
    assert not (run_dir / "frontier.json").exists()
    code, text, err = run_cli("frontier", run_dir)
    assert code == 0, err
    assert "1 candidate(s) on the frontier" in text and "c0000" in text and "c0001" not in text
    code, text, err = run_cli("frontier", run_dir, "--json")
    assert code == 0 and json.loads(text) == json.loads(out.read_text())


def test_the_run_directory_api_finds_what_the_run_recorded(tmp_path):
    from evotui.engine.rundir import RunDir

    run_dir, out = _run_with_out(tmp_path)
    rd = RunDir.open(run_dir)
    assert rd.frontier_path == out and rd.log_path == run_dir / "run.log"
    assert rd.frontier().ids == ["c0000"] and rd.frontier().objectives["loss"] == "min"
    assert [n["id"] for n in rd.lineage()] == ["c0000", "c0001"]
    assert rd.summary()["best"]["loss"]["id"] == "c0000"
    assert out.resolve() in rd.owned()


def test_a_frontier_that_is_not_json_is_one_line(run_cli, tmp_path):
    bad = tmp_path / "frontier.json"
    bad.write_text("{not json")
    code, _, err = run_cli("frontier", bad)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(bad) in err


def test_every_run_flag_has_one_option_on_run_and_tui():
    import dataclasses

    import typer.main

    from evotui.cli import app
    from evotui.commands.run_flags import OPTIONS
    from evotui.engine.flags import INTERNAL, RunFlags

    assert set(OPTIONS) == {f.name for f in dataclasses.fields(RunFlags)} - INTERNAL
    commands = typer.main.get_command(app).commands
    for name in ("run", "tui"):
        params = {p.name for p in commands[name].params}
        assert set(OPTIONS) <= params, name


def test_strict_json_and_the_finite_helper(tmp_path):
    from evotui import jsonio

    assert [jsonio.finite(v) for v in (1, 2.5, True, None, "3", float("nan"),
                                       float("inf"))] == [1.0, 2.5, None, None, None, None,
                                                          None]
    doc = {"a": [1.0, float("nan")], "b": (float("-inf"), {"c": 2}), "d": "x"}
    jsonio.write(tmp_path / "x.json", doc)
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": [1.0, None],
                                                             "b": [None, {"c": 2}], "d": "x"}
    assert jsonio.read(tmp_path / "missing.json") is None


def test_every_command_lives_under_commands():
    import typer.main

    from evotui.cli import app

    def walk(group, path=()):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):  # a group (of Typer's own copy of click)
                yield from walk(cmd, (*path, name))
            else:
                yield " ".join((*path, name)), cmd.callback

    found = dict(walk(typer.main.get_command(app)))
    assert {"run", "tui", "frontier", "ablate", "bench engine"} <= set(found)
    for name, callback in found.items():
        module = getattr(callback, "__wrapped__", callback).__module__
        assert module.startswith("evotui.commands."), (name, module)
