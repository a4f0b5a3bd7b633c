"""Serving side of the LeNet-5 digit classifier.

The TorchServe handler and the modules it imports (preprocessing, normalisation, request parsing,
response schema, artifact loading) are shipped inside the `.mar`; deploy/archive.py lists them.
Two tools for people stay out of it: the HTTP client (`handler.client`) and the preprocessing
benchmark and preview (`handler.preprocessing_cli`).
"""
