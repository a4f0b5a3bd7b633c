"""Evaluation tools that score a trained model on labelled client-like images.

`python -m evaluation realworld` (`make eval-realworld`) scores the real-world set of
`samples.realworld` in-process and through a real TorchServe; see `evaluation.realworld`.
"""
