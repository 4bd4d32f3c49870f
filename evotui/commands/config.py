"""``evotui validate`` and ``evotui schema``: a config checked and sized; the config format's
JSON Schema. torch loads only for the meta-device build of ``validate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from evotui.commands.common import ConfigArg, JsonOpt
from evotui.errors import UserError


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("schema")(schema)


def validate(config: ConfigArg, as_json: JsonOpt = False) -> None:
    """Check a config and print its size: layers, parameters, FLOPs/token, KV bytes/token."""
    from evotui import summary
    from evotui.dsl import estimate, load

    notes: list[str] = []
    cfg = load(config, notes=notes)
    est = estimate(cfg.model, cfg.data.seq_len)
    built = params_built(cfg)
    from evotui.dsl import memory

    if as_json:
        typer.echo(json.dumps(summary.as_json(cfg, est, str(config), notes) | {
            "params_built": built, "training_memory": memory.table(cfg)}))
    else:
        typer.echo(summary.as_text(cfg, est, str(config), notes, built))
        typer.echo("\n".join(memory.lines(cfg)))


def params_built(cfg) -> int:
    """Parameters of the model really built from the spec (on the meta device: no memory)."""
    from evotui.model.lm import build_model, count_parameters

    try:
        return count_parameters(build_model(cfg.model, cfg.data.seq_len, device="meta"))
    except (RuntimeError, ValueError, OverflowError) as e:  # sizes torch cannot allocate
        raise UserError.single(f"the model cannot be built: {e}", path="model") from None


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
