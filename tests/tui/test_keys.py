"""Each key's effect, driven with Textual's pilot on the fixed run: the commands it writes to
the store (or does not), the screens it opens, the rows it shows."""

from __future__ import annotations

import asyncio

from evotui.engine.store import RunStore
from evotui.tui.app import EvoApp
from evotui.tui.confirm import ConfirmScreen
from evotui.tui.details import DetailsScreen
from evotui.tui.frontier import FrontierScreen
from evotui.tui.help import HelpScreen
from tests.tui.helpers import ready, rows, text_of, until

SIZE = (120, 40)


def commands(run_dir) -> list[tuple[str, str, str]]:
    with RunStore.open(run_dir, readonly=True) as store:
        return [(c["candidate"], c["action"], c["status"]) for c in store.commands()]


def drive(run_dir, sampler, keys_then_check, readonly=False):
    """Run the app on ``run_dir``, wait for its first poll, then ``await keys_then_check(app,
    pilot)``; returns what the app exited with."""
    app = EvoApp(run_dir, readonly=readonly, sampler=sampler)

    async def main():
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await keys_then_check(app, pilot)
        return app.return_value

    return asyncio.run(main())


def test_pause_resume_kill_write_commands_for_the_selected_candidate(fixture_run, sampler):
    async def keys(app, pilot):
        assert rows(app)[:3] == ["c0000", "c0001", "c0002"]
        await pilot.press("down", "down")
        assert app.population.selected == "c0002"  # running
        await pilot.press("p")
        await pilot.press("down")  # c0003, paused
        await pilot.press("r")
        await pilot.press("k")  # asks first; "n" leaves it
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("k", "y")
        await pilot.pause()

    drive(fixture_run, sampler, keys)
    assert commands(fixture_run) == [("c0002", "pause", "pending"),
                                     ("c0003", "resume", "pending"),
                                     ("c0003", "kill", "pending")]


def test_keys_that_cannot_apply_write_nothing(fixture_run, sampler):
    async def keys(app, pilot):
        await pilot.press("p", "r", "k")  # c0000 is done: nothing to pause, resume or kill
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("down", "down", "r")  # c0002 runs: not paused
        await pilot.pause()

    drive(fixture_run, sampler, keys)
    assert commands(fixture_run) == []


def test_readonly_attach_disables_every_key_that_changes_the_run(fixture_run, sampler):
    async def keys(app, pilot):
        assert app.store.readonly
        await pilot.press("down", "down", "p", "k", "y", "down", "r")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        # the rest still works
        await pilot.press("f")
        assert isinstance(app.screen, FrontierScreen)

    drive(fixture_run, sampler, keys, readonly=True)
    assert commands(fixture_run) == []


def test_enter_shows_spec_lineage_and_metrics(fixture_run, sampler):
    async def keys(app, pilot):
        await pilot.press("down", "down", "down", "down", "enter")  # c0004, a crossover
        screen = app.screen
        assert isinstance(screen, DetailsScreen)
        assert screen.candidate["id"] == "c0004"
        text = text_of(*screen.query("Static"))
        assert "Candidate c0004" in text
        assert "crossover(a blocks 0..3 + b blocks 4..6)" in text
        assert "name: tiny-c0004" in text  # the spec as YAML
        assert "c0000 c0001" in text  # its parents
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailsScreen)

    drive(fixture_run, sampler, keys)


def test_f_shows_the_frontier_and_x_y_change_the_axes(fixture_run, sampler):
    async def keys(app, pilot):
        await pilot.press("f")
        screen = app.screen
        assert isinstance(screen, FrontierScreen)
        assert [e["id"] for e in screen.entries] == ["c0000", "c0001"]
        assert set(screen.points) == {"c0000", "c0001"}  # finished, every objective measured
        x, y = screen.x, screen.y
        await pilot.press("x")
        assert screen.x != x and screen.y == y
        for key in "xxxxxyyyyy":  # every objective in turn, never the same on both axes
            await pilot.press(key)
            assert screen.x != screen.y
        await pilot.press("escape")
        assert not isinstance(app.screen, FrontierScreen)

    drive(fixture_run, sampler, keys)


def test_slash_filters_rows_and_escape_clears(fixture_run, sampler):
    async def keys(app, pilot):
        await pilot.press("slash", "p", "a", "u", "s")
        await until(pilot, lambda: rows(app) == ["c0003"])
        assert app.population.selected == "c0003"
        await pilot.press("escape")
        await until(pilot, lambda: len(rows(app)) == 7)
        await pilot.press("slash", *"g0", "enter")  # generation 0
        await until(pilot, lambda: rows(app) == ["c0000", "c0001"])
        assert "filter" in app.population.border_subtitle

    drive(fixture_run, sampler, keys)


def test_s_cycles_the_sort_key(fixture_run, sampler):
    async def keys(app, pilot):
        await pilot.press("down", "down")  # c0002
        await pilot.press("s")  # by training loss, lowest first; no loss at all last
        order = rows(app)
        losses = [app.population._shown[c]["loss"].plain for c in order]
        known = [float(v) for v in losses if v != "-"]
        assert known == sorted(known) and losses[len(known):] == ["-"] * (7 - len(known))
        assert order[0] == "c0000" and "sort loss" in app.population.border_subtitle
        assert order.index("c0002") == 1
        assert app.population.selected == "c0002"  # the cursor stays on its candidate

    drive(fixture_run, sampler, keys)


def test_question_mark_opens_help_and_q_detaches(fixture_run, sampler):
    async def keys(app, pilot):
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("q")

    message = drive(fixture_run, sampler, keys)
    assert "detached" in message and str(fixture_run) in message
    assert commands(fixture_run) == []


def test_selection_drives_the_loss_pane(fixture_run, sampler):
    async def keys(app, pilot):
        loss = app.query_one("LossPane")
        assert loss.shown == ("c0000", None, None)  # the seed is also the best
        await pilot.press("down")
        await until(pilot, lambda: loss.shown == ("c0001", "c0000", None))
        # no eval row: its held-out point is the final measurement, at its last step
        assert loss._series("c0001", "eval") == [(4.0, 4.70)]
        await pilot.press("down")
        await until(pilot, lambda: loss.shown == ("c0002", "c0000", None))
        steps = [r["step"] for r in loss.rows["c0002"] if r["kind"] == "train"]
        assert steps == list(range(1, 13))
        await pilot.press("down")
        await until(pilot, lambda: loss.shown == ("c0003", "c0001", "c0000"))

    drive(fixture_run, sampler, keys)


def test_a_poll_redraws_only_the_cells_and_rows_that_changed(fixture_run, sampler):
    async def keys(app, pilot):
        pane, table = app.population, app.population.table
        built, changed, drawn = table.rows_built, pane.cell_updates, table.cells_built
        with RunStore.open(fixture_run) as store:  # c0002 takes one more step
            store.add_metrics([{"candidate": "c0002", "rung": 2, "step": 13, "loss": 2.9,
                                "lr": 0.002, "tokens": 13 * 1024, "tokens_per_s": 220.0}])
            store.update_candidate("c0002", step=13)
        await until(pilot, lambda: pane.cell_updates > changed)
        await until(pilot, lambda: table.rows_built > built)  # drawn at the next screen update
        await pilot.pause()
        assert pane.cell_updates - changed == 2  # step 12/20 -> 13/20, loss 3.041 -> 2.9
        assert pane._shown["c0002"]["step"].plain == "13/20 r2"
        assert table.rows_built - built == 1  # one line built again, the others reused
        assert table.cells_built - drawn == 2  # of its cells, the two that changed

    drive(fixture_run, sampler, keys)
