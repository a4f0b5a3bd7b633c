"""Labelled digit images as clients send them, for tests, load tests, benchmarks and evaluation.

Never shipped in the .mar. Every sample carries its true label, so every answer can be checked.
- `samples.digits`: MNIST test digits as PNG uploads, and the filter that keeps those a model
  classifies correctly (load tests check every answer, so their images must be answerable).
"""
