"""``evotui convert``: a config in the earlier system's dialect, written in evotui's own form.

Nothing heavy is imported here: the conversion is the DSL's (``evotui.dsl.dialect``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evotui.errors import UserError


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("convert")(convert)


def convert(
    config: Annotated[Path, typer.Argument(help="A config (either dialect).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Write evotui's form here (YAML).",
                                      show_default=False)],
    model_only: Annotated[bool, typer.Option(
        "--model-only", help="Convert only the model section (a frontier genome whose run "
        "settings evotui refuses); writes a file with the model section alone.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Read CONFIG (the earlier system's dialect is detected and translated, one note per
    translation; what evotui cannot honour is refused naming the field) and write it in
    evotui's native form. Nothing is written unless the whole conversion succeeds."""
    import yaml

    from evotui import atomic
    from evotui.dsl import ModelSpec, dialect, parse, to_data
    from evotui.dsl.loader import read_yaml

    if out.resolve() == config.resolve():
        raise UserError.single("--out is the input file; write the native form elsewhere",
                               path="--out")
    if out.exists() and not force:
        raise UserError.single("exists; pass --force to overwrite it", source=str(out))
    try:
        text = config.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
        raise UserError.single("cannot be read as a YAML config file",
                               source=str(config)) from None
    data, lines = read_yaml(text, str(config))
    which, marker = dialect.detect(data)
    notes: list[str] = []
    if model_only:
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise UserError.single("has no model section", source=str(config))
        model_lines = {loc[1:]: n for loc, n in lines.items() if loc[:1] == ("model",)}
        data = dialect.translate(data, lines, str(config), notes)  # with the run's seq_len
        spec = parse(data["model"], ModelSpec, str(config), model_lines, notes)
        native = {"model": to_data(spec)}
    else:
        from evotui.dsl.run import RunConfig

        native = to_data(parse(data, RunConfig, str(config), lines, notes))
    head = [f"# converted by evotui convert from {config.name} "
            f"({'the earlier dialect' if which == dialect.EARLIER else 'evotui dialect'})"]
    head += [f"# note: {n}" for n in notes if not n.startswith(dialect.DIALECT_NOTE)]
    body = yaml.safe_dump(native, sort_keys=False, default_flow_style=None, width=100)
    atomic.write_text(out, "\n".join(head) + "\n" + body)
    what = f"the earlier dialect ({marker} marks it)" if which == dialect.EARLIER else \
        "evotui's dialect already"
    typer.echo(f"{config}: read as {what}; wrote {out}"
               + (" (model section only)" if model_only else ""))
    for n in notes:
        if not n.startswith(dialect.DIALECT_NOTE):
            typer.echo(f"  note: {n}")
