"""SES API servers for tests: moto's server mode, and a tiny server that fails like SES.

* :class:`MotoSes` -- moto's ``ThreadedMotoServer`` on a free loopback port. It speaks
  the SES v2 API: ``SendEmail`` with raw content is accepted from verified senders
  (and refused with ``MessageRejected`` otherwise), and every message it took is kept
  (:meth:`MotoSes.sent`, read from moto's in-process backend).
* :class:`FakeSesServer` -- a stdlib HTTP/1.1 server answering ``SendEmail`` the way the
  SES v2 API answers errors (status, ``x-amzn-ErrorType``, a JSON ``message``), from a
  script of replies; moto has no way to make SES throttle or fail with a 5xx. It
  counts requests and TCP connections (to see a client's pool being reused).

Fixtures: ``aws_env`` (fake credentials, no region, no profile files, no instance
metadata), ``moto_ses`` (one moto server per session, reset for each test).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from actors.testing.fakesmtp import Served

HOST = "127.0.0.1"
ACCESS_KEY = "AKIDTESTINGMAILACTORS"
SECRET_KEY = "test-secret-7f3c9a-never-logged"


@dataclass(frozen=True)
class SentRaw:
    """One message moto's SES took."""

    message_id: str
    source: str
    destinations: list[str]
    data: bytes


class MotoSes:
    """moto's SES v2 API on ``self.url`` (``http://127.0.0.1:PORT``)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
        self.url = ""

    def start(self) -> None:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        """Forget every identity and message (moto's ``/moto-api/reset``)."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as answer:
            answer.read()

    def verify(self, address: str, region: str) -> None:
        """Make ``address`` a verified identity in ``region``, through the SES v2 API."""
        import boto3

        client = boto3.client(
            "sesv2",
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        client.create_email_identity(EmailIdentity=address)

    def sent(self, region: str) -> list[SentRaw]:
        """What SES accepted in ``region``, oldest first (moto's backend, in this process)."""
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.ses.models import ses_backends

        backend = ses_backends[DEFAULT_ACCOUNT_ID][region]
        return [
            SentRaw(m.id, m.source, list(m.destinations), m.raw_data.encode())
            for m in backend.sent_messages
        ]


@dataclass(frozen=True)
class Reply:
    """One scripted answer: an HTTP status, an SES error code and message (or a body)."""

    status: int
    code: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering

    @classmethod
    def ok(cls, message_id: str) -> Reply:
        return cls(200, message=json.dumps({"MessageId": message_id}))


class FakeSesServer(Served):
    """Answers each ``SendEmail`` with the next scripted :class:`Reply` (then ``default``)."""

    def __init__(self, replies: list[Reply] | None = None, default: Reply | None = None) -> None:
        self.replies: deque[Reply] = deque(replies or [])
        self.default = default or Reply(500, "InternalFailure", "We encountered an internal error.")
        self.requests: list[tuple[str, bytes]] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def _next(self) -> Reply:
        with self._lock:
            return self.replies.popleft() if self.replies else self.default

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as SES

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner.connections += 1

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with owner._lock:
                    owner.requests.append((self.path, body))
                reply = owner._next()
                if reply.delay:
                    threading.Event().wait(reply.delay)
                if reply.status == 200:
                    payload = reply.message.encode()
                else:
                    payload = json.dumps({"message": reply.message}).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    if reply.code:
                        self.send_header("x-amzn-ErrorType", f"{reply.code}:")
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        server = ThreadingHTTPServer((HOST, 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"http://{HOST}:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Fake credentials in the environment, and nothing else AWS could find: no region,
    no profile, no config files, no instance metadata."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SESV2",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    values = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config-none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials-none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[MotoSes]:
    server = MotoSes()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_ses(_moto_server: MotoSes, aws_env: dict[str, str]) -> MotoSes:
    """moto's SES on loopback, emptied for this test; AWS credentials set (see aws_env)."""
    _moto_server.reset()
    return _moto_server
