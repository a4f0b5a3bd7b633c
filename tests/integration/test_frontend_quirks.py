"""What TorchServe 0.12.0's frontend (Netty 4.1.53.Final) itself does wrong, pinned against the
real session server, so that docs/security.md ("Limits") stays true and an upgrade that fixes
them shows up here. The handler cannot help: these never reach it. A proxy in front must.
"""

from __future__ import annotations

import base64
import socket
import zipfile
from pathlib import Path

import pytest
import ts

pytestmark = pytest.mark.integration

BUNDLED_NETTY = "4.1.53.Final"


def test_bundled_netty_version():
    jar = Path(ts.__file__).parent / "frontend" / "model-server.jar"
    with zipfile.ZipFile(jar) as archive:
        versions = archive.read("META-INF/io.netty.versions.properties").decode()
    assert f"netty-codec-http.version={BUNDLED_NETTY}" in versions


def _raw_request(server, head: str, body: bytes, wait: float = 3.0) -> tuple[bytes, bool]:
    """Send one raw HTTP/1.1 request; (what came back, whether the server closed the socket)."""
    host, port = server.inference_url.removeprefix("http://").split(":")
    token = server.inference_token
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(f"{head}Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n"
                     "\r\n".encode() + body)  # fmt: skip
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False
        except ConnectionResetError:  # the frontend resets the socket after some errors
            pass
        return received, True


def test_base64_transfer_encoded_part_is_a_500_from_the_frontend(torchserve, mnist_png):
    png, _ = mnist_png
    body = (b'--b\r\nContent-Disposition: form-data; name="a"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(png) + b"\r\n--b--\r\n")  # fmt: skip
    answer, _ = _raw_request(torchserve, "POST /predictions/lenet HTTP/1.1\r\nHost: x\r\n"
                             "Content-Type: multipart/form-data; boundary=b\r\n", body)
    assert answer.startswith(b"HTTP/1.1 500"), answer[:200]
    assert b"TransferEncoding Unknown: base64" in answer


def test_connection_close_is_not_honoured(torchserve, mnist_png):
    png, _ = mnist_png
    answer, closed = _raw_request(torchserve, "POST /predictions/lenet HTTP/1.1\r\nHost: x\r\n"
                                  "Content-Type: image/png\r\nConnection: close\r\n", png)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert not closed, "the frontend now closes the socket: update docs/security.md"
    assert b"connection: keep-alive" in answer.lower()
