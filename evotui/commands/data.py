"""``evotui data prepare|ls|rm`` and ``evotui bench data``. Nothing heavy at import."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from evotui.commands import run_flags as rf

Workers = Annotated[int | None, typer.Option(
    min=1, help="Tokeniser processes (default: data.workers, else the machine's cores).")]
CacheDir = Annotated[Path | None, typer.Option(
    "--cache-dir", help="Token cache (default: $EVOTUI_CACHE or ~/.cache/evotui/tokens).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DataMode = Annotated[str, typer.Option(
    "--data", help="config (its shards) or offline (the embedded corpus, see README).")]

data_app = typer.Typer(help="Token caches: build them ahead of a run, list them, remove them.",
                       no_args_is_help=True)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
    bench_app.command("data")(bench_data)


@data_app.command("prepare")
def prepare(
    config: Annotated[Path, typer.Argument(help="A YAML config.")],
    workers: Workers = None,
    steps: rf.Steps = None,
    generations: rf.Generations = None,
    population: rf.Population = None,
    data: DataMode = "config",
    cache_dir: CacheDir = None,
) -> None:
    """Build every shard's token cache to the budget `evotui run` with the same flags would
    use (a progress bar per shard); an interrupted prepare continues where it stopped."""
    from evotui.data import offline, prepare_run
    from evotui.data.budget import search_tokens
    from evotui.dsl import load
    from evotui.engine.runner import RunFlags, _overridden, rung_steps
    from evotui.errors import UserError
    from evotui.train.budget import tokens_per_step

    try:
        cfg = load(config)
        cfg = _overridden(cfg, RunFlags(generations=generations, population=population))
        if data_mode(data) == "offline":
            cfg = offline(cfg)
        rungs = rung_steps(cfg, steps)
        prepare_run(cfg, search_tokens(cfg, rungs.steps, tokens_per_step(cfg)),
                    cache_dir=cache_dir, workers=workers)
    except UserError as e:
        e.source = e.source or str(config)
        raise
    typer.echo(f"caches ready in {cache_dir or _default_dir()}", err=True)


def data_mode(value: str) -> str:
    """``--data``: config (the config's shards) or offline (the embedded corpus)."""
    if value not in ("config", "offline"):
        from evotui.errors import UserError

        raise UserError.single(f"unknown value {value!r}; use config or offline", path="--data")
    return value


@data_app.command("ls")
def ls(cache_dir: CacheDir = None, as_json: AsJson = False) -> None:
    """The token caches: source, revision, tokenizer, tokens, size on disk, last used."""
    from evotui.data import cache

    rows = cache.entries(cache_dir or _default_dir())
    if as_json:
        typer.echo(json.dumps(rows, indent=1, default=str))
        return
    if not rows:
        typer.echo(f"no token caches in {cache_dir or _default_dir()}")
        return
    typer.echo(f"{'key':<48} {'source':<40} {'revision':<10} {'tokenizer':<10} "
               f"{'tokens':>14} {'size':>9}  last used")
    for r in rows:
        rev = (r.get("identity") or {}).get("revision") or "-"
        state = "" if r.get("exhausted") else "+"
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["used"])) if r["used"] \
            else "never"
        src = r["source"] if len(r["source"]) <= 40 else "..." + r["source"][-37:]
        typer.echo(f"{r['key'][:48]:<48} {src:<40} {str(rev)[:10]:<10} "
                   f"{r['tokenizer'][:10]:<10} {r['n_tokens']:>13,}{state or ' '} "
                   f"{_size(r['size']):>9}  {used}")
    typer.echo("+: more of the source remains (a larger budget extends the cache)")


@data_app.command("rm")
def rm(
    match: Annotated[list[str] | None, typer.Argument(
        help="Remove caches whose key or source contains any of these.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove every cache.")] = False,
    cache_dir: CacheDir = None,
) -> None:
    """Remove token caches (by part of their key or source, or --all)."""
    from evotui.data import cache
    from evotui.errors import UserError

    if not match and not all_:
        raise UserError.single("name caches to remove (part of a key or source) or give --all",
                               path="evotui data rm")
    where = cache_dir or _default_dir()
    gone = [r for r in cache.entries(where)
            if all_ or any(m in r["key"] or m in r["source"] for m in match or [])]
    if not gone:
        typer.echo(f"no cache in {where} matches")
        return
    freed = sum(cache.remove(where, r["key"]) for r in gone)
    for r in gone:
        typer.echo(f"removed {r['key']} ({r['source']})")
    typer.echo(f"{len(gone)} cache(s), {_size(freed)} freed")


def bench_data(
    workers: Annotated[int | None, typer.Option(
        min=2, help="The parallel measurement's workers (default: the machine's cores).")] = None,
    megabytes: Annotated[float, typer.Option(min=1.0, help="Text per measurement.")] = 8.0,
    repeats: Annotated[int, typer.Option(min=1, help="Runs per figure (the best is kept).")] = 3,
    as_json: AsJson = False,
) -> None:
    """Tokenisation throughput (byte, a locally trained BPE, a gpt2-style byte-level BPE) at 1
    and N workers, and the time to the first training batch on a warm cache."""
    from evotui.bench import data as bench

    result = bench.run(workers=workers, megabytes=megabytes, repeats=repeats)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"tokenisation of {result['megabytes']} MB of text, best of {repeats} "
               f"({result['cores']} cores)")
    for name, r in result["tokenizers"].items():
        typer.echo(f"  {name:<10} 1 worker {r['tokens_per_s_1']:>12,.0f} tok/s   "
                   f"{result['workers']} workers {r['tokens_per_s_n']:>12,.0f} tok/s   "
                   f"x{r['speedup']:.2f}   CPU {r['cpu_s_1']:.2f} s -> {r['cpu_s_n']:.2f} s"
                   + ("" if r["pool"] else "   (no pool: bytes)"))
    typer.echo(f"  load average {result['load_average'][0]:.1f} while measuring")
    w = result["warm_first_batch_s"]
    typer.echo(f"  first training batch on a warm cache: {w:.3f} s")


def _default_dir() -> Path:
    from evotui.data.cache import default_cache_dir

    return default_cache_dir()


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
