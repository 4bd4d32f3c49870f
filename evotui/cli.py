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
    if as_json:
        typer.echo(json.dumps(summary.as_json(cfg, est, str(config), notes)))
    else:
        typer.echo(summary.as_text(cfg, est, str(config), notes))


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
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic.write_text(out, text)
        typer.echo(f"wrote {out}", err=True)


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
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the last line of defence for users
        if debug:
            raise
        typer.echo(f"evotui: internal error: {type(e).__name__}: {e} "
                   "(run again with --debug for the traceback)", err=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
