"""Loopback HTTP helpers for the serve tests: a uvicorn server in a thread, plain http.client requests."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import uvicorn

from edge_ad.serve.service import _bind


@contextlib.contextmanager
def running_app(app: Any) -> Iterator[int]:
    """Serve ``app`` on a free 127.0.0.1 port for the block; yields the port. Stops by itself."""
    sock = _bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()
        assert not thread.is_alive(), "test server did not stop"


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def post_image(
    port: int,
    data: bytes,
    content_type: str = "image/png",
    query: str = "",
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, dict[str, str], Any]:
    """POST /v1/predict; the body parsed as JSON when it is JSON."""
    status, head, body = request(
        port, "POST", f"/v1/predict{query}", data, {"Content-Type": content_type, **(headers or {})}, timeout
    )
    return status, head, json.loads(body) if head.get("content-type", "").startswith("application/json") else body


def get_json(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, body = request(port, "GET", path, headers=headers)
    return status, json.loads(body)


def raw_exchange(port: int, head: bytes, chunks: list[bytes], timeout: float = 30.0) -> bytes:
    """Send a hand-written request (headers, then body chunks) and return the raw answer up to its first blank line
    and body; a server that answers early may close before every chunk is sent, which is not an error here."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except OSError:
                break
        out = b""
        with contextlib.suppress(OSError):
            while True:
                part = s.recv(65536)
                if not part:
                    break
                out += part
                if b"\r\n\r\n" in out and out.split(b"\r\n\r\n", 1)[1].rstrip().endswith(b"}"):
                    break
        return out


def multipart(field: str, filename: str, data: bytes, content_type: str = "image/png") -> tuple[bytes, str]:
    """A one-part multipart/form-data body and its Content-Type."""
    boundary = "edgeadtestboundary7f3a"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def png_header_only(height: int, width: int) -> bytes:
    """A PNG that claims ``height x width`` RGB pixels and carries almost no data: a decompression-bomb stand-in."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")
