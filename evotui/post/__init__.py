"""After a run: tools that read a finished (or running) run and train or export from it.

``ablate`` (how much each motif of the best candidates is worth) and ``seed`` (a frontier
candidate as the next run's starting point). They read runs through
:mod:`evotui.engine.rundir` and train through the engine's executor; the commands that drive
them live in :mod:`evotui.commands`. Beside :mod:`evotui.analysis` (fits and reports, which
train nothing)."""
