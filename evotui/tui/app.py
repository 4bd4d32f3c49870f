"""The Textual app: four panes over one run store, keys that send commands through its
commands table. Thin: the data comes from :class:`~evotui.tui.feed.Feed`, each pane is its own
module, and the engine (for ``evotui tui``) from :class:`~evotui.tui.host.EngineHost`.

The same app serves ``evotui tui`` (an engine in this app's loop), ``evotui attach`` (a run
going on elsewhere) and ``evotui attach --readonly`` (every key that changes the run off).
Imports no torch.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.events import Resize
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Footer

from evotui.engine.store import RunStore
from evotui.lifecycle import FINISHED
from evotui.tui.cells import number
from evotui.tui.confirm import QuitScreen
from evotui.tui.details import DetailsScreen
from evotui.tui.feed import Feed, Update, children, frontier_points, lineage
from evotui.tui.frontier import FrontierScreen, read_frontier
from evotui.tui.gpu import GpuPane
from evotui.tui.help import HelpScreen
from evotui.tui.host import EngineHost
from evotui.tui.log import LogPane
from evotui.tui.loss import LossPane
from evotui.tui.messages import CandidateSelected, DetailsRequested
from evotui.tui.population import PopulationPane, PopulationTable
from evotui.tui.runstate import RungClock, RunState, plan_of, run_state
from evotui.tui.sampler import Sampler
from evotui.tui.status import StatusBar, status_text
from evotui.tui.steering import READONLY_KEYS, Steering
from evotui.tui.table import RowTable

POLL_S = 0.5
CHANGES_RUN = ("pause", "resume", "kill")
MAIN_ONLY = (*CHANGES_RUN, "details", "frontier", "filter", "sort", "reverse_sort", "zoom",
             "copy")
PANES = (PopulationPane, LossPane, GpuPane, LogPane)
WIDE, TALL, TINY = 120, 32, 20  # below: narrow layout, short rows, no Loss/GPU row


class EvoApp(Steering, App[str | None]):
    """``run_dir``: the run; ``host``: the engine when it runs in this app; ``readonly``: no
    key changes the run; ``sampler``: the GPU pane's source (tests pass a fixed one)."""

    TITLE = "evotui"
    ENABLE_COMMAND_PALETTE = False
    ALLOW_IN_MAXIMIZED_VIEW = "StatusBar, Footer"
    CSS = """
    #status { height: 1; padding: 0 1; background: $boost; color: $text; dock: top; }
    #body { height: 1fr; layout: grid; grid-size: 2 3; grid-columns: 3fr 2fr;
            grid-rows: 2fr 1fr 10; }
    #body > PopulationPane { row-span: 2; }
    #body > LogPane { column-span: 2; }
    #body.-narrow { grid-columns: 1fr 1fr; grid-rows: 3fr 2fr 8; }
    #body.-narrow > PopulationPane { row-span: 1; column-span: 2; }
    #body.-narrow.-short { grid-rows: 1fr 8 5; }
    .-maximized { height: 1fr; width: 1fr; }
    #body.-narrow.-tiny { grid-size: 2 2; grid-rows: 1fr 4; }
    #body.-tiny > LossPane, #body.-tiny > GpuPane { display: none; }
    """
    BINDINGS = [
        Binding("p", "pause", "pause"),
        Binding("r", "resume", "resume"),
        Binding("k", "kill", "kill"),
        Binding("enter", "details", "details"),
        Binding("f", "frontier", "frontier"),
        Binding("slash", "filter", "filter"),
        Binding("s", "sort", "sort"),
        Binding("S", "reverse_sort", "reverse sort", show=False),
        Binding("z", "zoom", "zoom"),
        Binding("y", "copy", "copy id"),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, run_dir: str | Path, *, host: EngineHost | None = None,
                 readonly: bool = False, sampler: Sampler | None = None,
                 poll_s: float = POLL_S, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.host = host
        self.readonly = readonly and host is None
        self.store = RunStore.open(self.run_dir, readonly=self.readonly)
        self.feed = Feed(self.store)
        self.clock = clock  # the time the status line counts from (tests fix it)
        self.rung_clock = RungClock()
        self.plan = plan_of(self.store)
        self.state: RunState | None = None
        self.requested: set[int] = set()  # commands sent from this app, until answered
        self.sampler = sampler
        self.poll_s = poll_s
        self.timings: list[dict[str, float]] = []  # per applied poll (the benchmark reads it)
        self._polling = False
        self._closed = False
        self._read_error: str | None = None
        self._quitting: str | None = None
        self._zoomed_from: Widget | None = None

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Container(id="body"):
            yield PopulationPane(self.feed.info.objectives, id="population")
            yield LossPane(self.feed.info.rungs, id="loss")
            yield GpuPane(self.sampler, id="gpu")
            yield LogPane(id="log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(PopulationPane).table.focus()
        self.query_one(LossPane).final = self._final_held_out
        if self.host is not None:
            self.host.start()
        self.set_interval(self.poll_s, self.poll)
        self.call_later(self.poll)

    def on_resize(self, event: Resize) -> None:
        body = self.query_one("#body")
        body.set_class(event.size.width < WIDE, "-narrow")
        body.set_class(event.size.height < TALL, "-short")
        body.set_class(event.size.height < TINY, "-tiny")

    @property
    def population(self) -> PopulationPane:
        return self.query_one(PopulationPane)

    # -- the feed -------------------------------------------------------------------------

    async def poll(self) -> None:
        """Read what changed (in a thread) and show it; skipped while a read is under way."""
        if self._polling or self._closed:
            return
        self._polling = True
        try:
            t0 = time.perf_counter()
            try:
                update, state = await asyncio.to_thread(self._read)
            except sqlite3.Error as e:  # a busy or vanished database: say so, try again
                if str(e) != self._read_error and not self._closed:
                    self._read_error = str(e)
                    self.notify(f"cannot read run.db: {e}", severity="warning")
                return
            if self._closed:  # the app closed while the read was under way
                return
            self._read_error = None
            t1 = time.perf_counter()
            self.state = state
            self.apply(update)
            t2 = time.perf_counter()
            timing = {"read_ms": (t1 - t0) * 1e3, "apply_ms": (t2 - t1) * 1e3,
                      "rows": len(update.metrics)}
            self.timings.append(timing)
            self.call_after_refresh(self._painted, timing, t2)
        finally:
            self._polling = False
            if self._closed:
                self.store.close()

    def _read(self) -> tuple[Update, RunState]:
        """One poll of the store and the run's state (in a thread)."""
        first = not self.feed._polled
        update = self.feed.poll()
        if first:  # every rung measured so far, once; then each poll's new events
            self.rung_clock.observe(self.store.events(0, 1_000_000))
        self.rung_clock.observe(update.events)
        state = run_state(self.store, self.feed.candidates.values(), self.rung_clock,
                          self.plan, self.clock(), update.workers)
        return update, state

    @staticmethod
    def _painted(timing: dict[str, float], since: float) -> None:
        timing["paint_ms"] = (time.perf_counter() - since) * 1e3

    def apply(self, update: Update) -> None:
        if not self.population.query(PopulationTable):
            return  # closing: the panes are being taken down
        self.population.apply(update, self.feed)
        loss = self.query_one(LossPane)
        loss.extend(update.metrics)
        loss.touch(update.candidates)
        self._track_loss()
        if update.events:
            self.query_one(LogPane).add(update.events)
        gpu = self.query_one(GpuPane)
        gpu.engine_workers = update.workers
        gpu.flush()
        self._answered(update.answered)
        self._status()

    def _track_loss(self) -> None:
        selected = self.population.selected
        c = self.feed.candidates.get(selected) if selected else None
        parent = (c.get("parents") or [None])[0] if c else None
        self.query_one(LossPane).track(selected, parent, self.feed.best(), self.feed.curve,
                                       self.population.marked)

    def _final_held_out(self, cid: str) -> tuple[float, float] | None:
        c = self.feed.candidates.get(cid)
        if c is None or c["status"] not in FINISHED:
            return None
        loss = number((c.get("metrics") or {}).get("loss"))
        return None if loss is None else (float(c.get("step") or 0), loss)

    def _status(self) -> None:
        self.query_one(StatusBar).show(status_text(self.state, self.mode, self._override()))

    def _override(self) -> str | None:
        """What the in-app engine says that the store cannot yet: an error, a stop asked."""
        if self.host is None:
            return None
        if self.host.error is not None:
            return f"engine error: {self.host.error}"
        if self.host.running and self.host.stopping:
            return "stopping"
        return None

    @property
    def mode(self) -> str:
        if self.host is None:
            return "attached, read-only" if self.readonly else "attached"
        return "engine in this app"

    @on(CandidateSelected)
    def _selected(self, event: CandidateSelected) -> None:
        self._track_loss()

    @on(RowTable.MarksChanged)
    def _marked(self, event: RowTable.MarksChanged) -> None:
        self._track_loss()

    # -- keys -----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MAIN_ONLY and len(self.screen_stack) > 1:
            return False  # the keys of the main screen, hidden on the others
        if action in ("help", "quit") and isinstance(self.screen, ModalScreen):
            return False  # a dialog answers its own keys only
        if action in CHANGES_RUN and self.readonly:
            return None  # shown disabled; the key still says why (on_key)
        return True

    @on(DetailsRequested)
    def _details_requested(self, event: DetailsRequested) -> None:
        self.show_details(event.candidate)

    def action_details(self) -> None:
        if self.population.selected:
            self.show_details(self.population.selected)

    def show_details(self, cid: str) -> None:
        c = self.store.candidate(cid)
        self.push_screen(DetailsScreen(c, lineage(self.feed.candidates, cid),
                                       children(self.feed.candidates, cid),
                                       self.feed.info.objectives))

    def action_frontier(self) -> None:
        info = self.feed.info
        self.push_screen(FrontierScreen(read_frontier(info.frontier_path),
                                        frontier_points(self.feed.candidates.values(),
                                                        info.objectives), info.objectives))

    def action_zoom(self) -> None:
        """The focused pane (the Loss pane from the Population table) gets the whole screen;
        again (or escape) gives the others back."""
        screen = self.screen
        if screen.maximized is not None:
            screen.minimize()
            if self._zoomed_from is not None:  # focus where it was before the zoom
                self._zoomed_from.focus()
            return
        pane: Widget = self.query_one(LossPane)
        focused = self._zoomed_from = self.focused
        if focused is not None and not isinstance(focused, PopulationTable):
            for node in (focused, *focused.ancestors):
                if isinstance(node, PANES):
                    pane = node
                    break
        screen.maximize(pane, container=False)

    def action_filter(self) -> None:
        self.population.open_filter()

    def action_sort(self) -> None:
        self.population.cycle_sort()

    def action_reverse_sort(self) -> None:
        self.population.reverse_sort()

    def action_help(self) -> None:
        disabled = {key: "read-only session" for key in READONLY_KEYS} if self.readonly else {}
        try:  # the run directory as the user would type it from here
            shown = self.run_dir.resolve().relative_to(Path.cwd())
        except ValueError:
            shown = self.run_dir
        self.push_screen(HelpScreen(f"This session: {self.mode}. Run directory: {shown}",
                                    disabled))

    async def action_quit(self) -> None:
        if self.host is None or not self.host.running:
            self.exit(self._goodbye())
            return
        if self._quitting:
            self.notify("already stopping: running candidates pause at their next step")
            return
        self.push_screen(QuitScreen(str(self.run_dir)), self._quit_chosen)

    def _quit_chosen(self, choice: str | None) -> None:
        if choice is None or self.host is None:
            return
        self._quitting = choice
        self.host.stop()
        self._status()
        self.notify("stopping: running candidates pause at their next step", timeout=30)
        self.run_worker(self._stop_then_exit(choice), group="quit")

    async def _stop_then_exit(self, choice: str) -> None:
        assert self.host is not None
        await self.host.wait()
        if choice == "leave" and self.host.error is None:
            pid, out = self.host.leave_headless()
            self.exit(f"the run goes on headless (pid {pid}, output in {out}); "
                      f"watch it with: evotui attach {self.run_dir}")
            return
        self.exit(self._goodbye())

    def _goodbye(self) -> str:
        if self.host is None:
            return (f"detached; the run is unchanged by quitting (evotui attach {self.run_dir} "
                    "to come back)")
        if self.host.error is not None:
            return f"the engine stopped with an error: {self.host.error}"
        if self.host.stopping:
            return f"run stopped; continue it with: evotui run --resume {self.run_dir}"
        return f"run finished: evotui frontier {self.run_dir}"

    # -- signals (installed by the launcher) ----------------------------------------------

    def terminate(self) -> None:
        """SIGTERM / SIGINT: stop the engine cleanly, then exit."""
        if self.host is not None and self.host.running:
            if not self._quitting:
                self._quit_chosen("stop")
        else:
            self.exit(self._goodbye())

    def hangup(self, detach: Callable[[], None] | None = None) -> None:
        """SIGHUP, the terminal is gone: stop the engine cleanly and exit; ``detach`` points
        the app's terminal descriptors somewhere harmless first."""
        if self.host is not None:
            self.host.hung_up = True
            self.host.stop()
        if detach is not None:
            detach()
        self.exit(self._goodbye())

    async def on_unmount(self) -> None:
        self._closed = True
        if not self._polling:  # else the poll under way closes it when its read is back
            self.store.close()
