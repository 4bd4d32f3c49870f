"""The ``evotui`` command line: thin Typer commands over the library.

User errors print one line (file, field path, fix) and exit 2; tracebacks only with --debug.
Heavy modules (torch, textual) are imported inside the commands that need them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from evotui import __version__
from evotui.commands import run_flags as rf
from evotui.errors import UserError

app = typer.Typer(
    name="evotui",
    help="Evolutionary architecture search for language models, steered from a terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ConfigArg = Annotated[Path, typer.Argument(help="A YAML config (see docs/dsl.md).")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"evotui {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks (accepted anywhere on the line).")
    ] = False,
) -> None:
    """evotui: evolve, train and compare language-model architectures."""


@app.command()
def validate(
    config: ConfigArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check a config and print its size: layers, parameters, FLOPs/token, KV bytes/token."""
    from evotui import summary
    from evotui.dsl import estimate, load

    notes: list[str] = []
    cfg = load(config, notes=notes)
    est = estimate(cfg.model, cfg.data.seq_len)
    built = _params_built(cfg)
    if as_json:
        typer.echo(json.dumps(summary.as_json(cfg, est, str(config), notes) | {
            "params_built": built}))
    else:
        typer.echo(summary.as_text(cfg, est, str(config), notes, built))


def _params_built(cfg) -> int:
    """Parameters of the model really built from the spec (on the meta device: no memory)."""
    from evotui.model.lm import build_model, count_parameters

    try:
        return count_parameters(build_model(cfg.model, cfg.data.seq_len, device="meta"))
    except (RuntimeError, ValueError, OverflowError) as e:  # sizes torch cannot allocate
        raise UserError.single(f"the model cannot be built: {e}", path="model") from None


@app.command()
def schema(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the JSON Schema of the config format (for editors' YAML language servers)."""
    from evotui import atomic
    from evotui.dsl import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if out is not None and out.is_dir():
        raise UserError.single("is a directory; give a file name such as evotui.schema.json",
                               path="--out", source=str(out))
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic.write_text(out, text)
        typer.echo(f"wrote {out}", err=True)


def default_config() -> Path:
    """The embedded default: configs/tiny.yaml shipped with the package."""
    return Path(__file__).resolve().parent / "configs" / "tiny.yaml"


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="A YAML config (default: tiny).")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Optimizer steps (default: the "
                                              "config's rung-1 budget).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Output directory (default: "
                                             "runs/train-<model name>).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: train.seed).")] = None,
    eval_batches: Annotated[int | None, typer.Option("--eval-batches", min=1)] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue from this checkpoint.")] = None,
) -> None:
    """Train one candidate: a progress bar, then its checkpoint and metrics.json."""
    from evotui.train.cli import train_one

    train_one(config or default_config(), steps, _device(device), out, seed, eval_batches,
              resume)


RunDirArg = Annotated[Path, typer.Argument(help="A run directory (holds run.db).")]


@app.command()
def run(
    config: rf.Config = None,
    generations: rf.Generations = None,
    steps: rf.Steps = None,
    eval_batches: rf.EvalBatches = None,
    device: rf.Device = "auto",
    devices: rf.Devices = None,
    checkpoint_dir: rf.CheckpointDir = None,
    out: rf.Out = None,
    log: rf.Log = None,
    run_dir: rf.RunDir = None,
    cleanup_old_checkpoints: rf.CleanupOldCheckpoints = False,
    parent_selection: rf.ParentSelection = None,
    population: rf.Population = None,
    seed: rf.Seed = None,
    resume: rf.Resume = None,
    cpu_slots: rf.CpuSlots = 1,
    quiet: rf.Quiet = False,
) -> None:
    """Run the evolutionary search headless: a status line and the log lines."""
    from evotui.engine.runner import RunFlags, open_run, run_headless

    flags = RunFlags(config, generations, steps, eval_batches, device, devices, checkpoint_dir,
                     out, log, run_dir, cleanup_old_checkpoints, parent_selection, population,
                     seed, resume, cpu_slots)
    engine, total = open_run(flags, default_config())
    run_headless(engine, total, quiet)


@app.command()
def status(run_dir: RunDirArg,
           as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False
           ) -> None:
    """What a run is doing: counts per status, running candidates, best so far."""
    from evotui.engine.exports import summary
    from evotui.engine.store import RunStore

    s = summary(RunStore.open(run_dir, readonly=True))
    if as_json:
        typer.echo(json.dumps(s, default=str))
        return
    typer.echo(json.dumps(s, indent=1, default=str))


@app.command()
def frontier(source: Annotated[Path, typer.Argument(help="A run directory or frontier JSON.")],
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The Pareto frontier of a run."""
    path = source / "frontier.json" if source.is_dir() else source
    if not path.is_file():
        raise UserError.single("no frontier.json here yet", source=str(source))
    data = json.loads(path.read_text())
    if as_json:
        typer.echo(json.dumps(data))
        return
    entries = data.get("frontier", data) if isinstance(data, dict) else data
    objectives = data.get("objectives", {}) if isinstance(data, dict) else {}
    typer.echo(f"{len(entries)} candidate(s) on the frontier of {source}")
    for e in entries:
        shown = ", ".join(f"{k} {e['metrics'].get(k, float('nan')):.4g}" for k in objectives)
        typer.echo(f"  {e['id']:<8} gen {e.get('generation', '?'):<3} rung {e.get('rung', '?')}"
                   f"  {shown}")


def _command(run_dir: Path, candidate: str, action: str, queue: bool = False) -> None:
    from evotui.engine import integrity
    from evotui.engine.store import RunStore

    integrity.check_name(candidate, "candidate")
    store = RunStore.open(run_dir)
    if not queue and integrity.engine_stopped(store):
        raise UserError.single(f"the run is stopped (no engine is running it), so nothing was "
                               f"sent; `evotui run --resume {run_dir}` continues it, and "
                               f"--queue leaves the {action} for that", source=str(run_dir))
    cid = store.request(candidate, action)
    when = ("the engine acts within about two seconds" if not queue or integrity.engine_alive(
        store) else "queued: the engine acts on it when the run is resumed")
    typer.echo(f"{action} {candidate}: requested (command {cid}); {when}")


QueueOpt = Annotated[bool, typer.Option(
    "--queue", help="On a stopped run, leave the command for the next --resume.")]


@app.command()
def pause(run_dir: RunDirArg, candidate: str, queue: QueueOpt = False) -> None:
    """Pause a candidate: it checkpoints at its next step and frees its slot."""
    _command(run_dir, candidate, "pause", queue)


@app.command("resume")
def resume_cmd(run_dir: RunDirArg, candidate: str, queue: QueueOpt = False) -> None:
    """Resume a paused candidate from its checkpoint."""
    _command(run_dir, candidate, "resume", queue)


@app.command()
def kill(run_dir: RunDirArg, candidate: str, queue: QueueOpt = False) -> None:
    """Kill a candidate: it stops, is marked killed and never becomes a parent."""
    _command(run_dir, candidate, "kill", queue)


bench_app = typer.Typer(help="Benchmarks: timings and errors, as a table or JSON.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError.single("no CUDA device is visible; use --device cpu (or check "
                               "CUDA_VISIBLE_DEVICES and the driver)", path="--device")
    if device not in ("cpu", "cuda"):
        raise UserError.single(f"unknown device {device!r}; use auto, cpu or cuda",
                               path="--device")
    return device


@bench_app.command("attention")
def bench_attention(
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seq_len: Annotated[int, typer.Option("--seq-len", min=16, help="Sequence length.")] = 2048,
    window: Annotated[int, typer.Option(min=1, help="Window of the sparse patterns.")] = 192,
    heads: Annotated[int, typer.Option(min=1)] = 8,
    head_dim: Annotated[int, typer.Option("--head-dim", min=8)] = 64,
    batch: Annotated[int, typer.Option(min=1)] = 1,
    dtype: Annotated[
        str | None, typer.Option(help="float32, bfloat16 or float16 (default: bf16 on CUDA).")
    ] = None,
    repeats: Annotated[int, typer.Option(min=1)] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Forward+backward time of each sparsity pattern on each attention backend, against
    dense causal attention, with each backend's max error against the fp32 reference."""
    from evotui.bench import attention

    if window > seq_len:
        raise UserError.single(f"--window {window} exceeds --seq-len {seq_len}",
                               path="--window")
    try:
        result = attention.run(_device(device), seq_len, head_dim, heads, batch, dtype,
                               window, repeats)
    except ValueError as e:
        raise UserError.single(str(e), path="--dtype") from None
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"attention fwd+bwd on {result['device']} ({result['device_name']}), "
               f"{result['dtype']}, seq_len {seq_len}, {heads} heads of {head_dim}, "
               f"batch {batch}, window {window}")
    typer.echo(f"{'pattern':<13} {'backend':<10} {'ms':>9} {'vs dense':>9} {'density':>8} "
               f"{'tiles':>6} {'max err':>9}")
    for r in result["results"]:
        typer.echo(f"{r['pattern']:<13} {r['backend']:<10} {r['ms']:>9.3f} "
                   f"{r['vs_dense'] or 0:>9.3f} {r['density']:>8.3f} {r['tile_density']:>6.3f} "
                   f"{r['max_err']:>9.2e}")


@bench_app.command("train")
def bench_train(
    config: Annotated[list[Path] | None, typer.Option(
        help="A config to measure (repeatable). Default: gpt2_124m, the scalehop seed and "
        "tiny on CUDA; tiny on CPU.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    steps: Annotated[int, typer.Option(min=1, help="Timed optimizer steps.")] = 10,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps first.")] = 3,
    compile_: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="torch.compile (default: the config's, on CUDA).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", min=8)] = None,
    optimizer_steps: Annotated[int, typer.Option(
        "--optimizer-steps", min=1, help="Steps of the Lion / Muon / AdamW comparison.")] = 60,
    attention: Annotated[bool, typer.Option(
        "--attention/--no-attention", help="Also time plain (materialised) attention.")] = True,
    optimizers: Annotated[bool, typer.Option(
        "--optimizers/--no-optimizers", help="Compare Lion and Muon with AdamW on tiny.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Training tokens/s, MFU and peak memory per config; fast versus plain attention; Lion
    and Muon against AdamW."""
    from evotui.bench import train as bench

    dev = _device(device)
    result = bench.run(config, dev, steps, warmup, compile_, batch_size, seq_len,
                       optimizer_steps, attention, optimizers)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"training throughput on {result['device']} (torch {result['torch']})")
    for r in result["runs"]:
        f = r["fast"]
        mfu = f"{f['mfu']:.1%}" if f["mfu"] is not None else "n/a"
        line = (f"  {r['name']:<28} {f['tokens_per_s']:>12,.0f} tok/s  step {f['step_ms']:.1f} "
                f"ms  MFU {mfu}  peak {f['peak_mem_mb']:,.0f} MiB")
        if "plain" in r:
            line += f"  (x{r['fast_vs_plain']:.2f} vs plain attention)"
        typer.echo(line)
    if "optimizers" in result:
        o = result["optimizers"]
        typer.echo(f"optimizers on {o['config']}, {o['steps']} steps (held-out loss):")
        for name in ("adamw", "lion", "muon"):
            typer.echo(f"  {name:<6} {o[name]['heldout_loss']}  ({o[name]['status']})")


@bench_app.command("engine")
def bench_engine(
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    population: Annotated[int, typer.Option(min=2)] = 4,
    generations: Annotated[int, typer.Option(min=1)] = 1,
    steps: Annotated[int, typer.Option(min=2, help="Full budget (rung 2) in steps.")] = 20,
    eval_batches: Annotated[int, typer.Option("--eval-batches", min=1)] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Where worker wall time goes on a small search (training steps, measurement, setup,
    checkpoints, the rest), and how long a slot sits idle between candidates."""
    from evotui.bench import engine as bench

    result = bench.run(_device(device), population, generations, steps,
                       eval_batches=eval_batches)
    if as_json:
        typer.echo(json.dumps(result))
        return
    idle = result["slot_idle_between_candidates_s"]
    shares = ", ".join(f"{k} {v:.1%}" for k, v in result["fractions"].items())
    typer.echo(f"{result['jobs']} worker jobs on {device}: {result['worker_wall_s']} s in "
               f"workers ({shares}); not in training steps {result['not_training_fraction']:.1%}"
               f", overhead beyond training and measurement {result['overhead_fraction']:.1%}; "
               f"slot idle between candidates: median {idle['median']} s, max {idle['max']} s;"
               f" run wall {result['run_wall_s']} s")


from evotui.commands import register_all  # noqa: E402

register_all(app, bench_app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and turns errors into exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        result = app(args=args, prog_name="evotui", standalone_mode=False)
    except UserError as e:
        if debug:
            raise
        typer.echo(e.render(), err=True)
        sys.exit(e.exit_code)
    except (click.exceptions.Exit, typer.Exit) as e:
        sys.exit(e.exit_code)
    except (click.ClickException, typer.TyperException) as e:  # usage: bad or missing options
        # (Typer carries its own copy of click, whose errors are TyperExceptions). One line.
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "evotui"
        hint = f" (see '{where} --help')" if ctx is not None else ""
        typer.echo(f"{where}: {e.format_message()}{hint}", err=True)
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the last line of defence for users
        if debug:
            raise
        from evotui.engine.integrity import machine_fault

        if machine_fault(e):  # a full disk or an I/O error: the machine's, said in one line
            typer.echo(f"evotui: {machine_fault(e)}: {' '.join(str(e).split())[:200]}", err=True)
            sys.exit(1)
        typer.echo(f"evotui: internal error: {type(e).__name__}: {e} "
                   "(run again with --debug for the traceback)", err=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
