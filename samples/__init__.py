"""Labelled client-like digit images.

- `render`: present a digit as an upload (scan, phone photo, pen-tool drawing, light on dark,
  small low-resolution scan; MNIST digits as photos for the realistic tests);
- `fonts`, `strokes`, `distort`: handwriting from writers other than MNIST's (shipped
  handwriting fonts, a stroke model of how people write each digit);
- `realworld`: the seeded real-world set with a validation and a test half.

Imports `handler` (normalisation) only; nothing runs at import time.
"""
