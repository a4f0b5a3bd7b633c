"""Serving deployment: the archive (`archive`), TorchServe's configuration (`config`), running a
TorchServe (`server`), its API keys (`keys`), the CLI (`python -m deploy`) and the container
recipe (Dockerfile, entrypoint, health check, compose scripts)."""
