"""Tools for people working on the project, never shipped in the .mar: the preprocessing
benchmark and preview (`python -m tools.preprocess_bench`) and its baseline."""
