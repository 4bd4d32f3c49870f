"""The details screen of one candidate: what it is (spec YAML, never wrapped: long lines scroll
sideways, so what is copied from it is the same YAML), where it came from (lineage, operator) and
how it did (metrics)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import HorizontalScroll, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from evotui.tui.cells import STATUS_STYLE, number


def summary_table(c: Mapping[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    rows = [
        ("status", Text(c["status"], style=STATUS_STYLE.get(c["status"], ""))),
        ("generation", str(c["generation"])), ("rung", str(c.get("rung", 0))),
        ("step", f"{c.get('step', 0)}/{c.get('total_steps') or '?'}"),
        ("device", c.get("device") or "-"),
        ("operator", c.get("operator") or "-"),
        ("parents", ", ".join(c.get("parents") or []) or "- (seed)"),
        ("checkpoint", c.get("checkpoint") or "-"),
    ]
    if c.get("error"):
        rows.append(("error", Text(str(c["error"]), style="red")))
    for key, value in rows:
        table.add_row(key, value)
    return table


def lineage_text(cid: str, ancestors: Sequence[Sequence[str]], children: Sequence[str]) -> Text:
    out = Text()
    names = ["parents", "grandparents"] + [f"{'great-' * i}grandparents" for i in range(1, 12)]
    for name, level in zip(names, ancestors, strict=False):
        out.append(f"{name:<14}", style="bold")
        out.append(" ".join(level) + "\n")
    if not ancestors:
        out.append(f"{cid} is a seed (no parents)\n")
    out.append(f"{'children':<14}", style="bold")
    out.append(" ".join(children) or "none yet")
    return out


def metrics_table(metrics: Mapping[str, Any], objectives: Mapping[str, str]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(justify="right")
    table.add_column(style="bright_black")
    ordered = [k for k in objectives if k in metrics] + sorted(
        k for k in metrics if k not in objectives)
    for key in ordered:
        value = metrics[key]
        shown = f"{value:.6g}" if number(value) is not None else str(value)
        note = f"objective ({objectives[key]})" if key in objectives else ""
        table.add_row(key, shown, note)
    if not ordered:
        table.add_row("-", "no metrics yet", "")
    return table


class DetailsScreen(Screen[None]):
    DEFAULT_CSS = """
    DetailsScreen > VerticalScroll { padding: 0 1; }
    DetailsScreen .section { margin-top: 1; text-style: bold; color: $accent; }
    DetailsScreen #spec-scroll { height: auto; overflow-x: auto; overflow-y: hidden; }
    DetailsScreen #spec { width: auto; }
    """
    BINDINGS = [Binding("escape,q,enter", "close", "back")]

    def __init__(self, candidate: Mapping[str, Any], ancestors: Sequence[Sequence[str]],
                 children: Sequence[str], objectives: Mapping[str, str]) -> None:
        super().__init__()
        self.candidate = candidate
        self.levels, self.offspring, self.objectives = ancestors, children, objectives

    def compose(self) -> ComposeResult:
        c = self.candidate
        spec = yaml.safe_dump(c.get("spec") or {}, sort_keys=False, default_flow_style=None,
                              width=88)
        with VerticalScroll():
            yield Static(Text(f"Candidate {c['id']}", style="bold"), id="details-title")
            yield Static(summary_table(c))
            yield Static("Lineage", classes="section")
            yield Static(lineage_text(c["id"], self.levels, self.offspring))
            yield Static("Metrics", classes="section")
            yield Static(metrics_table(c.get("metrics") or {}, self.objectives))
            yield Static("Spec", classes="section")
            # never wrapped (a wrapped line is not the same YAML): long lines scroll sideways
            with HorizontalScroll(id="spec-scroll"):
                yield Static(Syntax(spec, "yaml", theme="ansi_dark",
                                    background_color="default", word_wrap=False), id="spec")
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)
