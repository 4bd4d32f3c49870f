"""Search operators: mutation, crossover, selection, Pareto front, novelty. Pure: no I/O, no
torch, seeded RNG passed in."""
