"""The run: population, rungs, executors, the run store, commands."""
