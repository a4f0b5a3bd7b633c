"""Serving side of the LeNet-5 digit classifier.

The TorchServe handler and the modules it imports (preprocessing, normalisation, request parsing,
response schema, artifact loading) are shipped inside the `.mar`; deploy/archive.py lists them.
The HTTP client (`handler.client`) stays out of it; the preprocessing benchmark and preview
live in `tools/`.
"""
