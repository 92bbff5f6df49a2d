"""The scale benchmark's parts (benchmarks/scale_bench.py runs them): how a factor scales the
simulator (`scaling`), and how results become a table, a slope per stage and a plot (`curve`)."""
