"""A hook polling one export reuses its connection: reading bodies past urllib3 must not close it.

The hook reads bodies with http.client's ``read1`` (to time a dripping body between reads), which urllib3
does not see; a body read to its end gives the connection back to the pool, or every poll would pay a new
TCP (and TLS) handshake.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_provider_cex.hooks.content_exporter import ContentExporterHook

KEY = "cexk_keep_alive_0123456789abcdef"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, gzip_body: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.gzip_body = gzip_body
        self.connections = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_GET(self) -> None:
        body = json.dumps({"progressValue": 50}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.server.gzip_body:
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=[False, True], ids=["plain", "gzip"])
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    srv = _Server(gzip_body=request.param)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    conn = {"conn_type": "content_exporter", "host": f"http://127.0.0.1:{srv.server_port}", "password": KEY}
    monkeypatch.setenv("AIRFLOW_CONN_CEX_KEEP_ALIVE", json.dumps(conn))
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_five_polls_use_one_connection(server: _Server) -> None:
    with ContentExporterHook("cex_keep_alive") as hook:
        readings = [hook.get_export_progress("abc").progress for _ in range(5)]
    assert readings == [50.0] * 5
    assert server.connections == 1
