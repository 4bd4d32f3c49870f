"""Obeying pause, resume and kill: commands are states, not events.

A command written to the store (by ``evotui pause|resume|kill``, the TUI, or a test) stays
``pending`` until the engine has acted on it at the next point where it can, and then records
its outcome: ``done`` (how) or ``rejected`` (why, from :func:`evotui.lifecycle.command_refusal`
or the moment it came too late). Nothing is dropped. Where each acts:

* pause, queued: paused before it starts. Running: the worker is asked to checkpoint at its next
  step boundary; the command is done when the paused result arrives. If the rung finishes first
  (the pause came during the end-of-rung measurement), the result is kept and the pause acts
  before promotion: a promoted candidate is paused instead of queued for rung 2; one not
  promoted, or one that finished its last rung, has nothing left to pause (rejected, saying so).
* resume, paused: queued again; it continues from its checkpoint.
* kill, queued or paused: killed. Running: the worker is told to die (status ``killing``, then
  ``killed``; the executor escalates to SIGKILL after its grace period).

While the engine is stopping, commands wait for the next engine (``--resume``).
A mixin of :class:`evotui.engine.engine.Engine`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evotui.lifecycle import Command, Status, command_refusal

if TYPE_CHECKING:
    from evotui.engine.engine import Engine

    _Base = Engine
else:
    _Base = object


class Commands(_Base):
    def _obey_commands(self) -> None:
        for cmd in self.store.pending_commands():
            cid, action = cmd["candidate"], cmd["action"]
            c = self.store.candidate(cid)
            if action == Command.PAUSE:
                self._pause(cmd, c.status, c)
            elif action == Command.RESUME:
                if c.status == Status.PAUSED:
                    self.store.update_candidate(cid, status=Status.QUEUED)
                    self._done(cmd, "queued again; continues from its checkpoint")
                else:
                    self._refuse(cmd, c.status)
            elif action == Command.KILL:
                if cid in self._running and self.executor.request(cid, "kill"):
                    self.store.update_candidate(cid, status=Status.KILLING)
                    self._done(cmd, "killing")
                elif c.status in (Status.QUEUED, Status.PAUSED):
                    self.store.update_candidate(cid, status=Status.KILLED)
                    self._done(cmd, "killed")
                elif c.status == Status.RUNNING:
                    pass  # its job is ending now: the kill acts on what follows
                else:
                    self._refuse(cmd, c.status)

    def _pause(self, cmd: dict[str, Any], status: Status, c: Any) -> None:
        cid = cmd["candidate"]
        if cid in self._running:
            if cmd["id"] not in self._asked:  # pending until its result arrives
                self._asked.add(cmd["id"])
                self.executor.request(cid, "pause")
                self.log("pause", f"{cid}: pausing at the next step boundary", cid)
        elif status == Status.QUEUED:
            self.store.update_candidate(cid, status=Status.PAUSED)
            self._done(cmd, "paused before it started")
        elif self.awaiting_promotion(c) or status == Status.RUNNING:
            pass  # its rung finished (or its job is ending): it acts at what follows
        else:
            self._refuse(cmd, status)

    def _done(self, cmd: dict[str, Any], outcome: str) -> None:
        self.store.finish_command(cmd["id"], "done", outcome)
        self.log(cmd["action"], f"{cmd['candidate']}: {outcome}", cmd["candidate"])

    def _refuse(self, cmd: dict[str, Any], status: str, reason: str | None = None) -> None:
        reason = reason or command_refusal(cmd["action"], status) or (
            f"cannot {cmd['action']} a {status} candidate now")
        self.store.finish_command(cmd["id"], "rejected", reason)
        self.log("command", f"{cmd['candidate']}: {reason}", cmd["candidate"])

    def _settle_pauses(self, cid: str, step: int | None = None) -> None:
        """After a job of ``cid`` ended: its pending pauses are done (it paused), wait for the
        promotion (it finished a rung before the last), or came too late (anything else)."""
        c = self.store.candidate(cid)
        for cmd in self.store.pending_commands(cid):
            if cmd["action"] != Command.PAUSE:
                continue
            self._asked.discard(cmd["id"])
            if c.status == Status.PAUSED:
                self._done(cmd, f"paused at step {c.step}; resume continues from its checkpoint")
            elif self.awaiting_promotion(c):
                continue
            elif c.status.is_finished():
                self._refuse(cmd, c.status, f"cannot pause: rung {c.rung} finished (measured) "
                             "before the pause could act, and it is not trained further")
            elif c.status == Status.QUEUED:
                continue  # requeued (the engine is stopping): acts in the queue next time
            else:
                self._refuse(cmd, c.status, f"cannot pause: it was {c.status} before the pause "
                             "could act")

    def _pause_at_promotion(self, cid: str) -> bool:
        """Whether a pending pause of ``cid`` acts now that it is promoted (it is done)."""
        pauses = [cmd for cmd in self.store.pending_commands(cid)
                  if cmd["action"] == Command.PAUSE]
        for cmd in pauses:
            self._asked.discard(cmd["id"])
            self.store.finish_command(cmd["id"], "done", "paused before rung 2 (promoted); "
                                      "resume continues it into rung 2")
        return bool(pauses)

    def _refuse_pauses_not_promoted(self, ids: list[str], promoted: list[str]) -> None:
        for cid in ids:
            if cid in promoted:
                continue
            for cmd in self.store.pending_commands(cid):
                if cmd["action"] == Command.PAUSE:
                    self._asked.discard(cmd["id"])
                    status = self.store.candidate(cid).status
                    if status.is_finished():
                        self._refuse(cmd, status, "cannot pause: rung 1 finished (measured) "
                                     "before the pause could act, and it was not promoted")
