"""Quiet HTTP servers on 127.0.0.1 for real downloads in tests (no other address is used): a
folder server, a media server with the answers YouTube-scale downloads meet, a forward proxy."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import http.server
import re
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.server.requested.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # yt-dlp's generic extractor reads only the head of a direct link and hangs up,
        # which makes the stdlib server print a ConnectionResetError traceback.
        pass


@contextmanager
def serve_directory(root: Path, requested: list[str] | None = None) -> Iterator[str]:
    """Serve ``root`` over HTTP on a free loopback port; yield the base URL.

    Paths of GET requests are appended to ``requested`` when it is given.
    """
    handler = functools.partial(_QuietHandler, directory=str(root))
    with _serving(handler, requested=requested if requested is not None else []) as address:
        yield f"http://{address}"


@dataclass
class Request:
    """One request a :class:`MediaServer` or proxy answered."""

    path: str
    headers: dict[str, str]
    status: int = 0
    #: Body bytes written to the client.
    sent: int = 0


@dataclass
class MediaServer:
    """Named files served with what download tests need, on a free loopback port.

    Byte ranges (``Range: bytes=N-``, answered 206); ``cookie`` (``name=value``): a request
    without it is answered 403; requests number ``too_many_from`` .. ``too_many_from +
    too_many - 1`` (counted from 0) are answered 429; the answer to request number
    ``cut_request`` is cut after ``cut_after`` body bytes (the connection closed). Every
    request is appended to ``requests``.
    """

    files: dict[str, bytes]
    cookie: str | None = None
    too_many_from: int = 0
    too_many: int = 0
    cut_request: int | None = None
    cut_after: int = 0
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        request = Request(handler.path, dict(handler.headers.items()))
        with self.lock:
            number = len(self.requests)
            self.requests.append(request)
        body = self.files.get(urllib.parse.urlsplit(handler.path).path.lstrip("/"))
        cookies = [c.strip() for c in request.headers.get("Cookie", "").split(";")]
        if body is None:
            request.status = 404
        elif self.too_many_from <= number < self.too_many_from + self.too_many:
            request.status = 429
        elif self.cookie is not None and self.cookie not in cookies:
            request.status = 403
        if request.status:
            handler.send_error(request.status)
            return
        asked = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        start = int(asked.group(1)) if asked else 0
        request.status = 206 if start else 200
        handler.send_response(request.status)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", str(len(body) - start))
        handler.send_header("Accept-Ranges", "bytes")
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        handler.end_headers()
        end = start + self.cut_after if number == self.cut_request else len(body)
        with contextlib.suppress(OSError):  # the client may hang up (yt-dlp probes the head of a link)
            for offset in range(start, end, 16384):
                chunk = body[offset:min(offset + 16384, end)]
                handler.wfile.write(chunk)
                request.sent += len(chunk)
            if end < len(body):
                handler.wfile.flush()
                handler.connection.shutdown(socket.SHUT_RDWR)

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on a free loopback port; yield the base URL."""
        media = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
                pass

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                media.answer(self)

        with _serving(Handler) as address:
            yield f"http://{address}"


@contextmanager
def forwarding_proxy(user: str, password: str, seen: list[Request]) -> Iterator[str]:
    """A plain HTTP forward proxy on a free loopback port that asks for ``user:password``
    (407 without) and forwards GETs of absolute ``http://`` URLs; each request is appended
    to ``seen``. Yields the proxy URL with the credentials in it."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            request = Request(self.path, dict(self.headers.items()))
            seen.append(request)
            if self.headers.get("Proxy-Authorization") != expected:
                request.status = 407
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            target = urllib.parse.urlsplit(self.path)
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("proxy-authorization", "proxy-connection", "connection")}
            upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
            upstream.request("GET", target.path, headers=headers)
            answer = upstream.getresponse()
            request.status = answer.status
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("connection", "transfer-encoding"):
                    self.send_header(key, value)
            self.end_headers()
            with contextlib.suppress(OSError):
                while chunk := answer.read(65536):
                    self.wfile.write(chunk)
                    request.sent += len(chunk)
            upstream.close()

    with _serving(Handler) as address:
        yield f"http://{user}:{password}@{address}"


@contextmanager
def _serving(handler: Callable[..., http.server.BaseHTTPRequestHandler], **attributes: Any) -> Iterator[str]:
    """Run ``handler`` in a quiet threading server on a free loopback port (``attributes`` set on
    the server first, for the handler to read); yield ``host:port``."""
    server = _QuietServer(("127.0.0.1", 0), handler)
    for name, value in attributes.items():
        setattr(server, name, value)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
