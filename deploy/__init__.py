"""Serving deployment: archive building, TorchServe configuration, the local launcher and the
container recipe."""
