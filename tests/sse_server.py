"""A scripted SSE server (stdlib ``http.server`` in a thread) standing in for an OpenCode server.

Each accepted request to ``/event`` or ``/global/event`` plays the next script of ``scripts``
(one per connection), a list of steps:

- ``("status", code)``: answer ``code`` with a JSON error body and stop;
- ``("events", [dict, ...])``: one ``data: <json>`` frame per event, as OpenCode writes them;
- ``("raw", "text")``: bytes as they are (a bad frame, a comment line);
- ``("wait", threading.Event)``: block until the event is set (or the server stops);
- ``("cut", "partial frame")``: send a frame's beginning, then drop the connection mid-chunk.

The response is chunked (``Transfer-Encoding: chunked``, as OpenCode's server sends SSE), so a
cut is an incomplete chunked body to the client; a script that ends closes the stream cleanly.
Requests past the last script get 503.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Step = tuple[str, Any]


def frame(event: Any) -> str:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n"


class ScriptedSSEServer:
    """``with ScriptedSSEServer(scripts) as server:`` serves on ``server.url``."""

    def __init__(self, scripts: Sequence[Sequence[Step]], *, paths: Sequence[str] = ()) -> None:
        self.scripts = [list(script) for script in scripts]
        self.paths = tuple(paths) or ("/event", "/global/event")
        self.requests: list[str] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner.serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ScriptedSSEServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            index = len(self.requests)
            self.requests.append(handler.path)
        if handler.path.split("?")[0] not in self.paths:
            self._error(handler, 404)
            return
        if index >= len(self.scripts):
            self._error(handler, 503)
            return
        script = self.scripts[index]
        if script and script[0][0] == "status":
            self._error(handler, int(script[0][1]))
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            for kind, value in script:
                if kind == "events":
                    for event in value:
                        self._chunk(handler, frame(event))
                elif kind == "raw":
                    self._chunk(handler, value)
                elif kind == "wait":
                    while not value.wait(0.05):
                        if self.stopping.is_set():
                            return
                elif kind == "cut":
                    data = value.encode()
                    # Announce more bytes than are sent, then drop the connection.
                    handler.wfile.write(f"{len(data) + 100:x}\r\n".encode() + data)
                    handler.wfile.flush()
                    handler.connection.shutdown(socket.SHUT_RDWR)
                    handler.close_connection = True
                    return
                else:
                    raise ValueError(f"unknown step {kind!r}")
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
            handler.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    @staticmethod
    def _chunk(handler: BaseHTTPRequestHandler, text: str) -> None:
        data = text.encode()
        handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        handler.wfile.flush()

    @staticmethod
    def _error(handler: BaseHTTPRequestHandler, code: int) -> None:
        body = json.dumps({"name": "NotFoundError", "data": {"message": f"HTTP {code}"}}).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        handler.close_connection = True
