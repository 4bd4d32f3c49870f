"""The Population table as a user sees it: where the cursor is (in colour and without), which
columns a narrow terminal keeps, the frozen id, marks and the sort direction."""

from __future__ import annotations

import asyncio

from rich.segment import Segment

from evotui.tui import cells
from evotui.tui.app import EvoApp
from evotui.tui.table import CURSOR_MARK, LEAD, MARK, choose
from tests.tui.helpers import ready, rows


def drive(run_dir, sampler, size, keys_then_check):
    app = EvoApp(run_dir, sampler=sampler)

    async def main():
        async with app.run_test(size=size) as pilot:
            await ready(pilot)
            await keys_then_check(app, pilot)

    asyncio.run(main())


def line(table, y: int) -> list[Segment]:
    return list(table.render_line(y))


def plain(segments: list[Segment]) -> str:
    return "".join(s.text for s in segments)


def backgrounds(segments: list[Segment]) -> set:
    return {s.style.bgcolor for s in segments if s.text.strip() and s.style}


def test_the_cursor_row_renders_differently_from_its_neighbours(fixture_run, sampler):
    async def keys(app, pilot):
        table = app.population.table
        await pilot.press("down", "down")  # c0002, between c0001 and c0003
        await pilot.pause()
        above, cursor, below = (line(table, y) for y in (2, 3, 4))
        assert plain(cursor).lstrip(" ").startswith(f"{CURSOR_MARK} c0002")
        # without colour: only the cursor row carries the marker
        assert CURSOR_MARK not in plain(above) + plain(below)
        # in colour: the cursor background covers every cell, over each cell's own style
        # (the status colours), and no neighbour has it
        (cursor_bg,) = backgrounds(cursor)
        assert cursor_bg not in backgrounds(above) | backgrounds(below)
        await pilot.press("up")
        await pilot.pause()
        assert plain(line(table, 2)).startswith(CURSOR_MARK)
        assert not plain(line(table, 3)).startswith(CURSOR_MARK)

    drive(fixture_run, sampler, (120, 40), keys)


def test_at_80_columns_the_id_stays_and_columns_go_by_priority(fixture_run, sampler):
    async def keys(app, pilot):
        table = app.population.table
        shown = [c.key for c in table.shown_cols]
        assert shown[:2] == ["id", "front"]  # the frontier star right beside the id
        for key in ("status", "step", "loss", "params", "gen", "tok_s", "ppl_code"):
            assert key in shown
        assert "parents" not in shown  # the lowest priority goes first
        assert table.size.width >= table._total_width or table.virtual_size.width > \
            table.size.width
        header = plain(line(table, 0))
        assert "params" in header and "★" in header
        first = plain(line(table, 1))
        assert first.split()[:3] == [CURSOR_MARK, "c0000", "★"]
        table.scroll_to(x=40, animate=False)  # sideways: the id and star stay put
        await pilot.pause()
        assert plain(line(table, 1)).split()[:3] == [CURSOR_MARK, "c0000", "★"]

    drive(fixture_run, sampler, (80, 24), keys)


def test_choose_keeps_priority_zero_and_stretches_the_operator():
    cols = cells.columns({"ppl_code": "min", "ppl_text": "min"})
    wide = choose(cols, 200)
    assert [c.key for c in wide] == [c.key for c in cols]
    narrow = choose(cols, 30)  # less than the essentials: they stay (the table scrolls)
    assert {c.key for c in narrow} == {c.key for c in cols if c.priority == 0}
    used = LEAD + sum(c.width + 1 for c in choose(cols, 100))
    assert used <= 100
    operator = next(c for c in choose(cols, 100) if c.key == "operator")
    assert operator.width > 12  # what is left goes to the operator


def test_space_marks_rows_and_shift_s_reverses_the_sort(fixture_run, sampler):
    async def keys(app, pilot):
        table = app.population.table
        await pilot.press("space", "down", "space")  # c0000, then c0002 (space moves down)
        assert app.population.marked == ["c0000", "c0002"]
        assert plain(line(table, 1))[1] == MARK and plain(line(table, 2))[1] == " "
        await pilot.press("up", "space")  # unmark c0002
        assert app.population.marked == ["c0000"]
        await pilot.press("S")
        assert rows(app)[0] == "c0006" and "sort id ↓" in app.population.border_subtitle
        assert "id↓" in plain(line(table, 0))
        await pilot.press("s", "s", "s", "s", "s")  # id, loss, the three ppl columns: tok/s
        assert "sort tok/s ↓" in app.population.border_subtitle  # as the header reads

    drive(fixture_run, sampler, (120, 40), keys)


def test_the_frontier_table_has_the_same_cursor(fixture_run, sampler):
    async def keys(app, pilot):
        await pilot.press("f")
        table = app.screen.query_one("#frontier-table")
        assert plain(line(table, 1)).startswith(f"{CURSOR_MARK} c0000")
        await pilot.press("down")
        assert plain(line(table, 2)).startswith(f"{CURSOR_MARK} c0001")
        assert not plain(line(table, 1)).startswith(CURSOR_MARK)

    drive(fixture_run, sampler, (80, 24), keys)


def test_each_status_keeps_its_own_colour(fixture_run, sampler):
    async def keys(app, pilot):
        table = app.population.table
        colours = {}
        for y in range(2, table.row_count + 1):  # below the header and the cursor row
            segments = line(table, y)
            text = plain(segments)
            status = next(s for s in cells.STATUS_STYLE if f" {s} " in text)
            cell = next(seg for seg in segments if seg.text.strip() == status)
            colours[status] = cell.style.color
        assert None not in colours.values()
        assert colours["failed"] != colours["done"] != colours["running"]

    drive(fixture_run, sampler, (120, 40), keys)
