"""Labelled digit images as clients send them, for tests, load tests, benchmarks and evaluation.

Never shipped in the .mar. Every sample carries its true label, so every answer can be checked.

- `digits`: MNIST test digits as PNG uploads, and the filter that keeps those a model classifies
  correctly (load tests check every answer, so their images must be answerable);
- `render`: present a digit as an upload (scan, phone photo, pen-tool drawing, light on dark,
  small low-resolution scan; MNIST digits as photos for the realistic tests);
- `fonts`, `strokes`, `distort`: handwriting from writers other than MNIST's (shipped
  handwriting fonts, a stroke model of how people write each digit);
- `realworld`: the seeded real-world set with a validation and a test half;
- `mix`: the realistic traffic mix (MNIST PNGs, scans and drawings, 1-3 MP and 12 MP phone
  photos), the one definition the load tests and benches send.

Nothing runs at import time.
"""
