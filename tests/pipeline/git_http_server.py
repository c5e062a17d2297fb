"""A smart-HTTP git server (`git http-backend` behind http.server), over HTTPS when asked.

Stands in for github.com (or any other git host): it keeps an access log with the headers of
every request, so a test can say exactly which host received which credential. With a `token`
it answers 401 to any request without the matching Authorization header, as GitHub does for a
private repository; without one it serves everybody, as for a public repository. With
`redirect_to` it answers every request with a 301 to the same path on another server, as
GitHub does for a renamed repository.

`TlsCertificate.create` makes a self-signed certificate for `localhost` and `127.0.0.1`; git
trusts it through GIT_SSL_CAINFO. The two spellings of the loopback address give a test two
distinct hosts served by one process.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


def basic_authorization(token: str) -> str:
    """The Authorization value GitHub accepts for a token (and the worker sends)."""
    return "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()


@dataclass(frozen=True)
class TlsCertificate:
    """A self-signed certificate (its own CA) and its key, as PEM files."""

    cert_path: Path
    key_path: Path

    @classmethod
    def create(cls, folder: Path) -> TlsCertificate:
        """A certificate valid for LOOPBACK_HOSTS for a day."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / "cert.pem", folder / "key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cls(cert_path, key_path)


@dataclass(frozen=True)
class AccessLogEntry:
    """One request as the server received it."""

    request_line: str
    headers: dict[str, str]

    @property
    def host(self) -> str:
        """The Host header: which of the server's names the client meant."""
        return self.headers.get("Host", "")

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


def serve_git(handler: BaseHTTPRequestHandler, root: Path) -> None:
    """Answer one smart-HTTP request with `git http-backend` for the repositories under `root`."""
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else b""
    parts = urlsplit(handler.path)
    env = {
        "GIT_PROJECT_ROOT": str(root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": parts.path,
        "QUERY_STRING": parts.query,
        "REQUEST_METHOD": handler.command,
        "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_CONTENT_ENCODING": handler.headers.get("Content-Encoding", ""),
        "GIT_PROTOCOL": handler.headers.get("Git-Protocol", ""),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
    ).stdout
    head, _, payload = out.partition(b"\r\n\r\n")
    status = 200
    headers = []
    for line in head.decode().split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        elif name:
            headers.append((name, value.strip()))
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


class GitHttpServer:
    """Serves the bare repositories under `root` at <scheme>://127.0.0.1:<port>/<name>."""

    def __init__(
        self,
        root: Path,
        token: str | None = None,
        *,
        tls: TlsCertificate | None = None,
        redirect_to: str | None = None,
    ) -> None:
        self.root = root
        self.expected = basic_authorization(token) if token is not None else None
        self.redirect_to = redirect_to
        self.access_log: list[AccessLogEntry] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                server.access_log.append(AccessLogEntry(self.requestline, dict(self.headers)))
                if server.redirect_to is not None:
                    self.send_response(301)
                    self.send_header("Location", server.redirect_to.rstrip("/") + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.expected is not None and self.headers.get("Authorization") != (
                    server.expected
                ):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                serve_git(self, server.root)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "https" if tls else "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert_path, tls.key_path)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL under 127.0.0.1."""
        return self.url_for("127.0.0.1")

    def url_for(self, host: str) -> str:
        """The server's base URL under one of LOOPBACK_HOSTS."""
        return f"{self.scheme}://{host}:{self.port}"

    def netloc(self, host: str) -> str:
        """host:port, as GITHUB_TOKEN_HOSTS lists a host on a port other than 443."""
        return f"{host}:{self.port}"

    @property
    def seen_authorization(self) -> list[str | None]:
        return [entry.authorization for entry in self.access_log]

    @property
    def request_lines(self) -> list[str]:
        return [entry.request_line for entry in self.access_log]

    def __enter__(self) -> GitHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
