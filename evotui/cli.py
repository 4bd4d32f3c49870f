"""The ``evotui`` command line: the Typer app, its root options and :func:`main`.

Every command lives in :mod:`evotui.commands` (one module per group, registered from
``commands.MODULES``). ``main`` turns errors into exit codes: a user error prints one line
(file, field path, fix) and exits 2; tracebacks only with --debug. Heavy modules (torch,
textual) are imported inside the commands that need them.
"""

from __future__ import annotations

import sys
from typing import Annotated

import click
import typer

from evotui import __version__
from evotui.commands import register_all
from evotui.errors import UserError

app = typer.Typer(
    name="evotui",
    help="Evolutionary architecture search for language models, steered from a terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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


bench_app = typer.Typer(help="Benchmarks: timings and errors, as a table or JSON.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
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
