"""After a run: scaling-law fits and a recipe (``evotui fit-scaling``), and the Markdown report
with plots (``evotui report``). numpy, scipy and matplotlib; never torch."""
