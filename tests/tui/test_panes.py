"""The panes a user reads back and rearranges: the Log (focus, scroll, search, follow, the full
line), zoom, the Loss pane when short, a command waiting for the engine, and a read-only
session that says what it refused."""

from __future__ import annotations

import asyncio

from evotui.engine.store import RunStore
from evotui.tui.app import EvoApp
from evotui.tui.help import HelpScreen
from evotui.tui.log import CURSOR, LogPane, LogView
from evotui.tui.loss import LossPane
from evotui.tui.spark import sparkline
from tests.tui.conftest import clock
from tests.tui.helpers import ready, text_of, until


def drive(run_dir, sampler, keys_then_check, size=(120, 40), readonly=False):
    app = EvoApp(run_dir, sampler=sampler, clock=clock, readonly=readonly)

    async def main():
        async with app.run_test(size=size, notifications=True) as pilot:
            await ready(pilot)
            await keys_then_check(app, pilot)

    asyncio.run(main())


def notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def test_the_log_scrolls_searches_follows_and_shows_the_full_line(fixture_run, sampler):
    async def keys(app, pilot):
        pane = app.query_one(LogPane)
        view = pane.query_one(LogView)
        assert view.follow and len(view.lines) == 9
        await pilot.press("tab", "tab", "tab")  # Population, Loss, GPU, then the Log
        assert app.focused is view
        await pilot.press("up", "up")
        assert not view.follow and view.cursor == 6
        assert text_of(view).splitlines()[view.cursor - view.top].startswith(CURSOR)
        # the full line under the cursor, below the list
        full = text_of(pane.query_one("#log-full"))
        assert "c0003: pausing at the next step boundary" in full
        assert "line 7/9" in pane.border_subtitle
        await pilot.press("slash", *"crossover", "enter")
        assert "c0004 <- c0000 x c0001" in view.selected.plain
        await pilot.press("slash", *"promoted", "enter", "n")  # one match: n stays on it
        assert "promoted to rung 2" in view.selected.plain
        # a new event while reading back does not move the cursor; F follows again
        with RunStore.open(fixture_run) as store:
            store.add_event("mutation", "c0007 <- c0002: a new child", "c0007")
        await until(pilot, lambda: len(view.lines) == 10)
        assert "promoted to rung 2" in view.selected.plain
        await pilot.press("F")
        assert view.follow and "c0007 <- c0002" in view.selected.plain

    drive(fixture_run, sampler, keys)


def test_z_gives_the_loss_pane_the_whole_screen_and_back(fixture_run, sampler):
    async def keys(app, pilot):
        loss = app.query_one(LossPane)
        await pilot.press("z")
        assert app.screen.maximized is loss
        assert loss.size.height > 30  # of the 40 rows, all but the status line and footer
        await pilot.press("z")
        assert app.screen.maximized is None
        await pilot.press("tab", "tab", "tab", "z")  # the focused pane: the Log
        assert isinstance(app.screen.maximized, LogPane)

    drive(fixture_run, sampler, keys)


def test_a_short_loss_pane_gives_values_and_sparklines_not_a_misleading_axis(fixture_run,
                                                                              sampler):
    async def keys(app, pilot):
        loss = app.query_one(LossPane)
        await pilot.press("down", "down")  # c0002: its train loss ends at 3.041
        await until(pilot, lambda: loss.shown[0] == "c0002")
        summary = loss.summary(60).plain.splitlines()
        assert summary[0].startswith("c0002 train") and "3.041" in summary[0]
        assert any(line.startswith("parent c0000") for line in summary)

    drive(fixture_run, sampler, keys)
    assert sparkline([5.0, 4.0, 3.0, 3.0], 4) == "█▅▁▁"  # lowest ▁, highest █


def test_a_pending_command_shows_in_its_row_until_the_engine_answers(fixture_run, sampler):
    async def keys(app, pilot):
        pane = app.population
        await pilot.press("down", "down", "p")  # c0002 runs
        await until(pilot, lambda: pane._shown["c0002"]["status"].plain == "pause…")
        with RunStore.open(fixture_run) as store:  # the engine refuses it
            (cmd,) = store.pending_commands()
            store.finish_command(cmd["id"], "rejected", "c0002 is being measured")
        await until(pilot, lambda: pane._shown["c0002"]["status"].plain == "running")
        await until(pilot, lambda: any("refused" in n and "being measured" in n
                                       for n in notes(app)))

    drive(fixture_run, sampler, keys)


def test_read_only_says_what_it_refused_and_help_marks_the_keys(fixture_run, sampler):
    async def keys(app, pilot):
        await pilot.press("down", "down", "p")
        assert any("read-only session: pause refused" in n for n in notes(app))
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = text_of(*app.screen.query("Static"))
        assert "disabled (read-only session): pause the selected" in text

    drive(fixture_run, sampler, keys, readonly=True)


def test_the_spec_yaml_is_never_wrapped_and_y_copies_the_id_then_the_checkpoint(fixture_run,
                                                                               sampler):
    import yaml

    async def keys(app, pilot):
        await pilot.press("down", "down", "y")
        assert app.clipboard == "c0002"
        await pilot.press("y")
        assert app.clipboard.endswith("checkpoints/c0002.safetensors")
        await pilot.press("enter")
        await until(pilot, lambda: app.screen.query("#spec"))  # the details screen is up
        await pilot.pause()
        spec_widget = app.screen.query_one("#spec")
        shown = text_of(spec_widget)
        assert spec_widget.size.width > 80  # wider than the terminal: it scrolls sideways
        with RunStore.open(fixture_run, readonly=True) as store:
            assert yaml.safe_load(shown) == store.candidate("c0002")["spec"]

    drive(fixture_run, sampler, keys, size=(80, 24))


def test_the_loss_plot_grows_with_the_terminal_and_its_labels_span_the_curves(fixture_run,
                                                                              sampler):
    canvas_rows = {}

    def check(size):
        async def keys(app, pilot):
            loss = app.query_one(LossPane)
            await pilot.press("down", "down")  # c0002 runs; its parent c0000 overlaid
            await until(pilot, lambda: loss.shown[0] == "c0002")
            await pilot.pause()
            lines = ["".join(s.text for s in loss.render_line(y))
                     for y in range(loss.content_size.height)]
            top = next(i for i, line in enumerate(lines) if "┌" in line)
            bottom = next(i for i, line in enumerate(lines) if "└" in line)
            canvas_rows[size] = bottom - top - 1
            labels = [float(line.split("┤")[0]) for line in lines[top + 1:bottom]
                      if "┤" in line]
            ys = [y for curve in loss._curves for _, y in curve.points]
            assert labels[0] == round(max(ys), 2) and labels[-1] == round(min(ys), 2)

        drive(fixture_run, sampler, keys, size=size)

    check((80, 24))
    check((160, 48))
    assert canvas_rows[(160, 48)] > 4 * canvas_rows[(80, 24)]


def test_the_loss_curve_kept_between_polls_is_the_curve_of_all_its_rows():
    from evotui.tui.loss import MAX_ROWS

    pane = LossPane([200, 1000])
    pane.rows = {"c1": []}

    def fresh(kind):
        return [(r["step"], r["loss"]) for r in pane.rows["c1"] if r["kind"] == kind]

    step = 0
    for batch in (5, 1, 300, MAX_ROWS):  # the last one thins the older half
        rows = []
        for _ in range(batch):
            step += 1
            rows.append({"candidate": "c1", "kind": "eval" if step % 7 == 0 else "train",
                         "step": step, "loss": 5.0 / step})
        pane.extend(rows)
        assert pane._series("c1", "train") == fresh("train")
        assert pane._series("c1", "eval") == fresh("eval")
    assert len(pane.rows["c1"]) < step  # thinned, and the curve followed
