"""The benchmark sections, one module each: its `run(args)` measures and returns the section's result (a dict,
stored in benchmarks/results.json under the section's name). benchmarks/run.py is the one command that runs them."""
