"""Clients of the served model's HTTP API (never shipped in the .mar).

- `LenetClient`: predictions for image files or bytes, over one reused connection;
- `multipart_body`: THE encoding of several images in one request. TorchServe keeps only one
  value per multipart field name, so `-F image=@a -F image=@b` would reach the handler as ONE
  image; every image gets its own field name `image0`, `image1`, ... This is the one place that
  rule is implemented: the CLI, the batch job's http engine and the load tests all call it.
- `python -m client predict FILES` / `python -m client demo`: the command line.
"""

from client.http import ClientError, LenetClient, multipart_body

__all__ = ["ClientError", "LenetClient", "multipart_body"]
