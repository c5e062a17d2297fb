"""The serving benchmark's load generator: wrk posts the body and its figures are read right.

Runs the real wrk (Debian's package; `make test` installs it) for a second against a tiny
loopback server, so a change of the Lua script or of wrk's summary breaks here, not in the middle
of a benchmark run.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from bench.serving.wrk import run_wrk, write_script

WRK = shutil.which("wrk")
pytestmark = pytest.mark.skipif(WRK is None, reason="wrk is not installed (apt-get install wrk)")


class _Handler(BaseHTTPRequestHandler):
    """200 on /ok and 500 elsewhere; records each request's method, content type and body."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append(("POST", self.headers.get("Content-Type", ""), body))
        answer = b'{"predictions": [0]}'
        self.send_response(200 if self.path == "/ok" else 500)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: wrk sends thousands of requests."""


@pytest.fixture
def tiny_server() -> Iterator[str]:
    _Handler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_wrk_posts_the_body_and_counts_requests_and_errors(
    tiny_server: str, tmp_path: Path
) -> None:
    assert WRK is not None
    body = tmp_path / "body.json"
    body.write_text('{"data": [[5.1, 3.5, 1.4, 0.2]]}')
    script = write_script(tmp_path)

    ok = run_wrk(WRK, f"{tiny_server}/ok", body, connections=2, seconds=1, script=script)
    assert ok.requests > 0 and ok.error_count == 0
    assert ok.seconds > 0 and ok.requests_per_second == pytest.approx(ok.requests / ok.seconds)
    assert 0 < ok.p50_ms <= ok.p99_ms
    assert ("POST", "application/json", body.read_bytes()) in _Handler.seen
    assert all(seen == _Handler.seen[0] for seen in _Handler.seen)

    failing = run_wrk(WRK, f"{tiny_server}/fail", body, connections=2, seconds=1, script=script)
    assert failing.requests > 0
    assert failing.errors["status"] == failing.requests
    assert failing.error_count == failing.requests
