"""A quiet HTTP server on 127.0.0.1 for real downloads in tests (no other address is used)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
    server = _QuietServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    server.requested = requested if requested is not None else []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
