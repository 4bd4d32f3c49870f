"""``evotui bench attention|train|engine|compile``: timings and errors, as a table or JSON. (``bench
tui`` lives with the app's commands.) Each benchmark loads torch inside its command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from evotui.errors import UserError


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    bench_app.command("attention")(bench_attention)
    bench_app.command("train")(bench_train)
    bench_app.command("engine")(bench_engine)
    bench_app.command("compile")(bench_compile)


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
    backends: Annotated[str | None, typer.Option(
        help="Comma-separated backends to time (e.g. sdpa,chunked; default: every one "
        "available). The reference stays the oracle of the errors.")] = None,
    kinds: Annotated[bool, typer.Option(
        "--kinds/--no-kinds", help="Also time each attention kind's whole branch.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Forward+backward time of each sparsity pattern on each attention backend, against
    dense causal attention, with each backend's max error against the fp32 reference."""
    from evotui.bench import attention
    from evotui.engine.devices import single

    if window > seq_len:
        raise UserError.single(f"--window {window} exceeds --seq-len {seq_len}",
                               path="--window")
    chosen = None
    if backends is not None:
        from evotui.model.backends import FAMILY

        chosen = [b.strip() for b in backends.split(",") if b.strip()]
        unknown = [b for b in chosen if b not in FAMILY]
        if unknown or not chosen:
            raise UserError.single(f"unknown backend {', '.join(unknown) or '(none)'}; use "
                                   f"{', '.join(FAMILY)}", path="--backends")
    try:
        result = attention.run(single(device), seq_len, head_dim, heads, batch, dtype,
                               window, repeats, chosen)
    except ValueError as e:
        raise UserError.single(str(e), path="--dtype") from None
    from evotui.bench import attention_kinds

    result["kinds"] = [] if not kinds else attention_kinds.run(
        single(device), seq_len, head_dim, heads, batch, attention.DTYPES[result["dtype"]],
        window, repeats)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"attention fwd+bwd on {result['device']} ({result['device_name']}), "
               f"{result['dtype']}, seq_len {seq_len}, {heads} heads of {head_dim}, "
               f"batch {batch}, window {window}")
    typer.echo(f"{'pattern':<13} {'backend':<10} {'ms':>9} {'vs dense':>9} {'density':>8} "
               f"{'tiles':>6} {'vs 1.5xd':>9} {'max err':>9}")
    for r in result["results"]:
        typer.echo(f"{r['pattern']:<13} {r['backend']:<10} {r['ms']:>9.3f} "
                   f"{r['vs_dense'] or 0:>9.3f} {r['density']:>8.3f} {r['tile_density']:>6.3f} "
                   f"{r['vs_budget'] or 0:>9.3f} {r['max_err']:>9.2e}")
    if not result["kinds"]:
        return
    typer.echo("attention kinds (a whole branch, projections included; '2x seq': time at twice "
               "the length / time at the length)")
    attention_kinds.print_table(result["kinds"], typer.echo)


def bench_train(
    config: Annotated[list[Path] | None, typer.Option(
        help="A config to measure (repeatable). Default: gpt2_124m, the scalehop seed and "
        "tiny on CUDA; tiny on CPU.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    steps: Annotated[int, typer.Option(min=1, help="Timed (steady-state) optimizer steps.")] = 10,
    warmup: Annotated[int, typer.Option(
        min=0, help="Untimed steps first (at least 1; a step that compiles is never timed).")] = 3,
    compile_: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="torch.compile (default: the config's, on CUDA).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", min=8)] = None,
    optimizer_steps: Annotated[int, typer.Option(
        "--optimizer-steps", min=1, help="Steps of the Lion / Muon / AdamW comparison.")] = 60,
    attention: Annotated[bool, typer.Option(
        "--attention/--no-attention", help="Also time plain attention (SDPA, dense mask).")] = True,
    optimizers: Annotated[bool, typer.Option(
        "--optimizers/--no-optimizers", help="Compare Lion and Muon with AdamW on tiny.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Training tokens/s, MFU and peak memory per config; fast versus plain attention; Lion
    and Muon against AdamW."""
    from evotui.bench import train as bench
    from evotui.engine.devices import single

    dev = single(device)
    result = bench.run(config, dev, steps, warmup, compile_, batch_size, seq_len,
                       optimizer_steps, attention, optimizers)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"training throughput on {result['device']} (torch {result['torch']})")
    for r in result["runs"]:
        f = r["fast"]
        mfu = f"{f['mfu']:.1%}" if f["mfu"] is not None else "n/a"
        step = f"{f['step_ms']:.1f} ms" if f["step_ms"] is not None else "n/a"
        line = (f"  {r['name']:<28} {f['tokens_per_s']:>12,.0f} tok/s  step {step}  MFU {mfu}"
                f"  peak {f['peak_mem_mb']:,.0f} MiB  compile {f['compile_s']:.1f} s  warm-up "
                f"{f['warmup_s']:.1f} s")
        if "plain" in r:
            line += f"  (x{r['fast_vs_plain']:.2f} vs {r['plain']['backend']} attention)"
        typer.echo(line)
    if "optimizers" in result:
        o = result["optimizers"]
        typer.echo(f"optimizers on {o['config']}, {o['steps']} steps (held-out loss):")
        for name in ("adamw", "lion", "muon"):
            typer.echo(f"  {name:<6} {o[name]['heldout_loss']}  ({o[name]['status']})")


def bench_engine(
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    population: Annotated[int, typer.Option(min=2)] = 4,
    generations: Annotated[int, typer.Option(min=1)] = 1,
    steps: Annotated[int, typer.Option(min=2, help="Full budget (rung 2) in steps.")] = 20,
    eval_batches: Annotated[int, typer.Option("--eval-batches", min=1)] = 2,
    executor: Annotated[str, typer.Option(help="local or ray.")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="With --executor ray: auto or HOST:PORT (default: a Ray "
        "started here).")] = None,
    cpu_slots: Annotated[int, typer.Option("--cpu-slots", min=1)] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Where worker wall time goes on a small search (training steps, measurement, setup,
    checkpoints, the rest), and how long a slot sits idle between candidates."""
    from evotui.bench import engine as bench
    from evotui.engine.devices import single

    result = bench.run(single(device), population, generations, steps,
                       eval_batches=eval_batches, executor=executor, ray_address=ray_address,
                       cpu_slots=cpu_slots)
    if as_json:
        typer.echo(json.dumps(result))
        return
    idle = result["slot_idle_between_candidates_s"]
    shares = ", ".join(f"{k} {v:.1%}" for k, v in result["fractions"].items())
    typer.echo(f"{result['jobs']} {executor} worker jobs on {device}: "
               f"{result['worker_wall_s']} s in "
               f"workers ({shares}); not in training steps {result['not_training_fraction']:.1%}"
               f", overhead beyond training and measurement {result['overhead_fraction']:.1%}; "
               f"slot idle between candidates: median {idle['median']} s, max {idle['max']} s;"
               f" run wall {result['run_wall_s']} s")


def bench_compile(
    config: Annotated[list[Path] | None, typer.Option(
        help="A config to alternate (repeatable). Default: tiny and the scalehop seed scaled "
        "to width 128.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    candidates: Annotated[int, typer.Option(min=1, help="Consecutive candidates.")] = 10,
    steps: Annotated[int, typer.Option(min=1, help="Steady-state steps per candidate.")] = 3,
    backend: Annotated[str, typer.Option(
        help="torch.compile backend: inductor, aot_eager or eager.")] = "inductor",
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", min=8)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Consecutive compiled candidates in one process, as a worker runs them: graphs, graph
    breaks, eager fallbacks, recompiles, compile seconds, and the step against eager."""
    from evotui.bench import compile as bench
    from evotui.engine.devices import single

    if backend not in ("inductor", "aot_eager", "eager"):
        raise UserError.single(f"unknown backend {backend!r}; use inductor, aot_eager or eager",
                               path="--backend")
    result = bench.run(config, single(device), candidates, steps, backend, batch_size, seq_len,
                       progress=lambda text: typer.echo(text, err=True))
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{len(result['candidates'])} compiled candidates in one process on "
               f"{result['device']} (torch {result['torch']}, {backend})")
    for r in result["candidates"]:
        step = f"{r['step_ms']:.1f}" if r["step_ms"] is not None else "n/a"
        typer.echo(f"  #{r['candidate']:<2} {r['config']:<16} graphs {r['graphs']:>2}  breaks "
                   f"{r['graph_breaks']}  eager frames {r['eager_frames']}  recompiles "
                   f"{r['recompiles']}  compile {r['compile_s']:.1f} s  step {step} ms")
    for name, c in result["configs"].items():
        ratio = c.get("compiled_vs_eager")
        typer.echo(f"  {name}: eager step {c['eager_step_ms']} ms, compiled {c['compiled_step_ms']}"
                   f" ms" + (f" (x{ratio:.2f})" if ratio else "")
                   + f"; MoE graph breaks {c['moe_graph_breaks']}")
