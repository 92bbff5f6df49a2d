"""The drift benchmark's parts (benchmarks/drift_bench.py runs them): the simulated world and
its model, the daily replay of the monitor, and the figures drawn from it."""
