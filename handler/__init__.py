"""Serving side of the LeNet-5 digit classifier: preprocessing, response schema and the
TorchServe handler. Every module here is shipped inside the `.mar` archive."""
