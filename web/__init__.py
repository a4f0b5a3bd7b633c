"""The draw-a-digit web page: a small Starlette app (`web.app`) in front of TorchServe.

`python -m web` (or `make demo`) serves it on http://127.0.0.1:8000. The browser talks only to
this app; the app forwards each image to TorchServe's inference API with the inference key,
which never leaves the server side.
"""
