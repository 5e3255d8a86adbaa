"""Secrets never leak: run the product with real secrets configured and grep what it wrote.

The embedded system (``supervisor.py up``, one process) and a distributed cluster
(``supervisor.py up --profile distributed``: integration, two email-server
workers, auth) run with an SMTP server that demands a password (aiosmtpd AUTH),
a gRPC bearer token, a control token and, distributed, a RabbitMQ user of its own
whose password comes from the environment, gRPC over TLS. Every log line (at
DEBUG), every stored document, every CLI output (``status``, ``search``,
``console --json``) and every email received is then searched for the secret
values. Hostile calls are made on purpose along the way (a wrong token, no token,
an SMTP password the server refuses), since error paths are where secrets leak.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from aiosmtpd.smtp import AuthResult, LoginPassword
from grpclib import GRPCError
from grpclib import Status as GrpcStatus

from actors.domain.schema import Status
from actors.grpc.security import client_ssl_context
from config import load_config
from protos import email_pb2
from tests.support.cluster import Cluster, cluster_env
from tests.support.embedded import embedded_config, grpc_request, request, running, save_request
from tests.support.security import GrpcClient, make_certs
from tests.support.services import free_port, local_broker_ctl
from tests.support.smtp_servers import CapturingServer

ROOT = Path(__file__).resolve().parent.parent.parent
SMTP_USER = "mailer"
# The test SMTP servers take AUTH over plain TCP on loopback on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def secret(name: str) -> str:
    """A value that appears nowhere unless it leaked."""
    return f"{name}-{uuid.uuid4().hex}"


class AuthSmtpServer(CapturingServer):
    """Captures what it receives, after AUTH with the one password it accepts."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.logins = {"ok": 0, "refused": 0}
        super().__init__(
            authenticator=self._authenticate, auth_required=True, auth_require_tls=False
        )

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == SMTP_USER.encode()
            and data.password == self.password.encode()
        )
        self.logins["ok" if ok else "refused"] += 1
        return AuthResult(success=ok, handled=False)


def assert_nothing_holds(secrets: dict[str, str], texts: dict[str, str | bytes]) -> None:
    """No secret value in any text (nor its JSON-escaped or URL-encoded form)."""
    from urllib.parse import quote

    leaks = []
    for name, value in secrets.items():
        forms = {value, json.dumps(value)[1:-1], quote(value, safe="")}
        for where, text in texts.items():
            data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
            if any(form.encode() in data for form in forms):
                leaks.append(f"{name} in {where}")
    assert not leaks, leaks


def assert_used(texts: dict[str, str | bytes]) -> None:
    """The grep is not vacuous: there is output to search."""
    assert all(texts.values()), [k for k, v in texts.items() if not v]


async def cli(
    env: dict[str, str], *args: str, profile: str = "embedded"
) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, str(ROOT / "supervisor.py"), "--profile", profile, *args]
    with trio.fail_after(60):
        return await trio.run_process(
            argv, env=env, capture_stdout=True, capture_stderr=True, check=False
        )


def cli_text(done: subprocess.CompletedProcess[bytes]) -> str:
    return done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")


class Process:
    """``supervisor.py up`` of the embedded profile as a child, its output kept."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.lines: list[str] = []

    @asynccontextmanager
    async def running(self, ready: Callable[[], bool]) -> AsyncIterator[Process]:
        argv = [sys.executable, "-u", str(ROOT / "supervisor.py"), "--profile", "embedded", "up"]
        proc = await trio.lowlevel.open_process(
            argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        async def pump() -> None:
            assert proc.stdout is not None
            with self.log.open("ab") as out:
                async for chunk in proc.stdout:
                    out.write(chunk)
                    self.lines.extend(chunk.decode(errors="replace").splitlines())

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump)
                with trio.fail_after(60):
                    while not ready():
                        assert proc.returncode is None, "\n".join(self.lines[-30:])
                        await trio.sleep(0.1)
                try:
                    yield self
                finally:
                    with trio.CancelScope(shield=True):
                        proc.send_signal(signal.SIGINT)
                        with trio.move_on_after(30):
                            await proc.wait()
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def wait_sent(
    env: dict[str, str], event_id: str, profile: str = "embedded"
) -> dict[str, Any]:
    with trio.fail_after(60):
        while True:
            done = await cli(env, "status", event_id, profile=profile)
            assert done.returncode == 0, cli_text(done)
            doc: dict[str, Any] = json.loads(done.stdout)
            if doc["status"] in ("SENT", "FAILED", "SUPPRESSED"):
                return doc
            await trio.sleep(0.2)


# == embedded ============================================================================


async def test_embedded_logs_documents_and_cli_output_hold_no_secret(tmp_path):
    secrets = {
        "smtp password": secret("smtp-pw"),
        "grpc token": secret("grpc-tok"),
        "control token": secret("control-tok"),
    }
    grpc_port, control_port = free_port(), free_port()
    with AuthSmtpServer(secrets["smtp password"]) as smtp:
        env = {
            **os.environ,
            "MAILACTORS_TEST_SMTP_PASSWORD": secrets["smtp password"],
            "MAILACTORS_TEST_GRPC_TOKEN": secrets["grpc token"],
            "MAILACTORS_TEST_CONTROL_TOKEN": secrets["control token"],
            "MAILACTORS__SERVICE__LOG_LEVEL": "DEBUG",
            "MAILACTORS__SERVICE__LOG_FORMAT": "text",
            "MAILACTORS__SERVICE__RUN_DIR": str(tmp_path / "run"),
            "MAILACTORS__SERVICE__DATA_DIR": str(tmp_path),
            "MAILACTORS__STORE__SQLITE_PATH": str(tmp_path / "emails.sqlite3"),
            "MAILACTORS__EMAIL_SERVER__IDEMPOTENCY_PATH": str(tmp_path / "sent.sqlite3"),
            "MAILACTORS__PROVIDER__KIND": "smtp",
            "MAILACTORS__PROVIDER__SENDER": "noreply@mailactors.test",
            "MAILACTORS__PROVIDER__SMTP__HOST": "127.0.0.1",
            "MAILACTORS__PROVIDER__SMTP__PORT": str(smtp.port),
            "MAILACTORS__PROVIDER__SMTP__USERNAME": SMTP_USER,
            "MAILACTORS__PROVIDER__SMTP__PASSWORD_ENV": "MAILACTORS_TEST_SMTP_PASSWORD",
            "MAILACTORS__GRPC__AUTH_PORT": str(grpc_port),
            "MAILACTORS__GRPC__TOKEN_ENV": "MAILACTORS_TEST_GRPC_TOKEN",
            "MAILACTORS__CONTROL__PORT": str(control_port),
            "MAILACTORS__CONTROL__TOKEN_ENV": "MAILACTORS_TEST_CONTROL_TOKEN",
        }
        outputs: dict[str, str | bytes] = {}
        process = Process(env, tmp_path / "embedded.log")
        async with process.running(lambda: port_open(grpc_port)):
            ids = []
            for template, variables in (
                ("verification", ["name=Ada", "code=493817", "expires_minutes=10"]),
                ("welcome", ["name=Ada", "product=Acme"]),
            ):
                done = await cli(env, "send", "--to", "ada@example.com", "--template", template,
                                 *[f"--var={v}" for v in variables])
                assert done.returncode == 0, cli_text(done)
                outputs[f"send {template}"] = cli_text(done)
                ids.append(json.loads(done.stdout)["eventId"])
            docs = [await wait_sent(env, i) for i in ids]
            assert all(d["status"] == "SENT" for d in docs), docs
            done = await cli(env, "status", ids[0])
            outputs["status"] = cli_text(done)
            done = await cli(env, "search", "--recipient", "ada@example.com")
            assert done.returncode == 0, cli_text(done)
            outputs["search"] = cli_text(done)
            done = await cli(env, "console", "--json")
            assert done.returncode == 0, cli_text(done)
            outputs["console --json"] = cli_text(done)
            done = await cli(env, "console", "--json", "--tcp", f"127.0.0.1:{control_port}")
            assert done.returncode == 0, cli_text(done)
            outputs["console --tcp --json"] = cli_text(done)
            # hostile: a wrong token is refused, and the answer echoes nothing
            wrong = {**env, "MAILACTORS_TEST_GRPC_TOKEN": "not-" + secrets["grpc token"][::-1]}
            done = await cli(wrong, "status", ids[0])
            assert done.returncode != 0 and "UNAUTHENTICATED" in cli_text(done)
            outputs["status with a wrong token"] = cli_text(done)
        received = b"\n".join(m.data for m in smtp.messages())
    assert smtp.logins["ok"] >= 1  # the password really was used
    outputs["log"] = (tmp_path / "embedded.log").read_bytes()
    outputs["store"] = (tmp_path / "emails.sqlite3").read_bytes()
    outputs["emails received"] = received
    config = load_config("embedded", env=env)
    outputs["config repr"] = repr(config)
    outputs["config redacted"] = json.dumps(config.redacted())
    assert_used(outputs)
    assert b"DEBUG" in outputs["log"]  # type: ignore[operator]
    assert_nothing_holds(secrets, outputs)


async def test_a_refused_smtp_password_appears_in_no_log_record_or_document(
    tmp_path, monkeypatch, caplog
):
    """Error paths: the server refuses the login. Checked on the raw log records, before
    any redacting formatter, so our own code is shown never to log the value at all."""
    attempted = secret("wrong-pw")
    monkeypatch.setenv("MAILACTORS_TEST_SMTP_PASSWORD", attempted)
    caplog.set_level(logging.DEBUG)
    with AuthSmtpServer(secret("right-pw")) as smtp:
        config = embedded_config(
            tmp_path,
            provider={
                "kind": "smtp",
                "smtp": {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "username": SMTP_USER,
                    "password_env": "MAILACTORS_TEST_SMTP_PASSWORD",
                },
            },
        )
        async with running(config) as app:
            accepted = await app.request(request())
            doc = await app.wait_terminal(accepted.event_id, timeout=60)
    assert smtp.logins["refused"] >= 1 and doc.status is Status.FAILED, doc
    formatter = logging.Formatter()
    records = "\n".join(
        f"{r.getMessage()} {r.__dict__} "
        + (formatter.formatException(r.exc_info) if r.exc_info else "")
        for r in caplog.records
    )
    assert_nothing_holds(
        {"smtp password": attempted},
        {"log records": records, "document": repr(doc), "status history": repr(doc.history)},
    )
    assert doc.error and "535" in doc.error  # the reason is there, the password is not


# == distributed ==========================================================================


@asynccontextmanager
async def broker_user(amqp_url: str) -> AsyncIterator[tuple[str, str]]:
    """A RabbitMQ user of the test's own, with a password nothing else knows."""
    ctl = local_broker_ctl(amqp_url, "a broker user of the test's own")
    user, password = f"mailactors-test-{uuid.uuid4().hex[:8]}", secret("broker-pw")
    await trio.run_process([ctl, "-q", "add_user", user, password])
    try:
        await trio.run_process([ctl, "-q", "set_permissions", "-p", "/", user, ".*", ".*", ".*"])
        yield user, password
    finally:
        await trio.run_process([ctl, "-q", "delete_user", user], check=False)


@pytest.mark.services
async def test_distributed_cluster_over_tls_with_tokens_leaks_no_secret(
    tmp_path, elasticsearch_url, rabbitmq_url, edge  # noqa: F811
):
    secrets = {"smtp password": secret("smtp-pw"), "grpc token": secret("grpc-tok")}
    certs = make_certs(tmp_path / "certs")
    async with broker_user(rabbitmq_url) as (user, broker_password):
        secrets["broker password"] = broker_password
        with AuthSmtpServer(secrets["smtp password"]) as smtp:
            env = cluster_env(tmp_path, elasticsearch_url, rabbitmq_url, smtp.port)
            env.update(
                {
                    "MAILACTORS_TEST_SMTP_PASSWORD": secrets["smtp password"],
                    "MAILACTORS_TEST_GRPC_TOKEN": secrets["grpc token"],
                    "MAILACTORS_TEST_BROKER_PASSWORD": broker_password,
                    "MAILACTORS__SERVICE__LOG_LEVEL": "DEBUG",
                    "MAILACTORS__SERVICE__LOG_FORMAT": "json",
                    "MAILACTORS__SERVICE__RUN_DIR": str(tmp_path / "run"),
                    # the services log in as the test's own user (the URL without its
                    # password, the password from another variable); MAILACTORS__BUS__URL
                    # stays the guest URL the cluster fixture cleans the topology with
                    "MAILACTORS_TEST_BROKER_URL": f"amqp://{user}@127.0.0.1:5672/",
                    "MAILACTORS__BUS__URL_ENV": "MAILACTORS_TEST_BROKER_URL",
                    "MAILACTORS__BUS__PASSWORD_ENV": "MAILACTORS_TEST_BROKER_PASSWORD",
                    "MAILACTORS__PROVIDER__SMTP__USERNAME": SMTP_USER,
                    "MAILACTORS__PROVIDER__SMTP__PASSWORD_ENV": "MAILACTORS_TEST_SMTP_PASSWORD",
                    "MAILACTORS__GRPC__TOKEN_ENV": "MAILACTORS_TEST_GRPC_TOKEN",
                    "MAILACTORS__GRPC__TLS_CERT_FILE": str(certs.cert),
                    "MAILACTORS__GRPC__TLS_KEY_FILE": str(certs.key),
                    "MAILACTORS__GRPC__TLS_CA_FILE": str(certs.ca),
                }
            )
            config = load_config("distributed", env=env)
            assert config.bus.resolved_url(env) == f"amqp://{user}:{broker_password}@127.0.0.1:5672/"
            tls = client_ssl_context(config.grpc)
            outputs: dict[str, str | bytes] = {}
            async with Cluster(env, workers=2, log=tmp_path / "cluster.log").running() as cluster:
                auth = GrpcClient(edge, cluster.auth_port, token=secrets["grpc token"], ssl=tls)
                integration = GrpcClient(
                    edge, cluster.integration_port, token=secrets["grpc token"], ssl=tls
                )
                async with auth, integration:
                    # no token, a wrong token: refused on both services, nothing stored
                    for client, method, req in (
                        (auth, "RequestEmail", grpc_request()),
                        (integration, "SaveEmail", save_request()),
                        (integration, "SearchEmails", email_pb2.SearchEmailsRequest()),
                    ):
                        for metadata in (
                            None,
                            {"authorization": "Bearer " + secrets["grpc token"][:-1]},
                        ):
                            with pytest.raises(GRPCError) as err:
                                await client.call(method, req, metadata=metadata)
                            assert err.value.status is GrpcStatus.UNAUTHENTICATED
                    empty = await integration.call("SearchEmails", email_pb2.SearchEmailsRequest())
                    assert empty.total == 0
                    # the flow works with the token, over TLS, through the password-protected edges
                    ids = [
                        (
                            await auth.call(
                                "RequestEmail", grpc_request(recipient=f"u{i}@example.com")
                            )
                        ).event_id
                        for i in range(6)
                    ]
                    # a hostile publisher on the broker: an email saved PENDING, then its
                    # send event republished with a Bcc injected in the subject
                    saved = await integration.call("SaveEmail", save_request())
                    await publish_hostile(config, env, saved.event_id)
                    docs = await wait_terminal(integration, [*ids, saved.event_id])
                    after = (
                        await auth.call("RequestEmail", grpc_request(recipient="after@example.com"))
                    ).event_id
                    docs.update(await wait_terminal(integration, [after]))
                cli_env = dict(env)
                for args in (("status", ids[0]), ("search", "--recipient", "u0@example.com"),
                             ("console", "--json")):
                    done = await cli(cli_env, *args, profile="distributed")
                    assert done.returncode == 0, cli_text(done)
                    outputs[" ".join(args[:1])] = cli_text(done)
                dead = await dead_letters(config, env)
            received = b"\n".join(m.data for m in smtp.messages())
    assert all(docs[i].status == email_pb2.SENT for i in [*ids, after]), docs
    hostile = docs[saved.event_id]
    assert (
        hostile.status == email_pb2.FAILED
        and "subject: must not contain line breaks" in hostile.error
    )
    reasons = sorted(reason for _, _, reason in dead)
    assert any(r.startswith("invalid EmailSendEvent: subject: ") for r in reasons), reasons
    assert any("nested too deeply" in r for r in reasons), reasons
    assert smtp.logins["ok"] >= 1
    outputs["cluster log"] = (tmp_path / "cluster.log").read_bytes()
    outputs["emails received"] = received
    async with httpx.AsyncClient() as http:
        index = env["MAILACTORS__STORE__INDEX"]
        await http.post(f"{elasticsearch_url}/{index}/_refresh")
        outputs["store"] = (
            await http.post(f"{elasticsearch_url}/{index}/_search", json={"size": 100})
        ).text
    outputs["config repr"] = repr(config)
    outputs["config redacted"] = json.dumps(config.redacted())
    assert_used(outputs)
    assert_nothing_holds(secrets, outputs)


async def publish_hostile(config: Any, env: dict[str, str], event_id: str) -> None:
    """As any publisher with broker credentials could: straight onto the send queue."""
    from actors.bus.rabbitmq import RabbitBus
    from actors.domain.schema import EmailSendEvent, encode

    bus = RabbitBus(config.bus, role="tool", url=config.bus.resolved_url(env))
    await bus.open()
    try:
        event = EmailSendEvent(
            event_id=event_id, recipient="ada@example.com", template="welcome",
            variables={"name": "Ada", "product": "Acme"}, subject="Hi\r\nBcc: victim@example.com",
        )
        await bus.publish_raw(config.bus.send_queue, encode(event))
        deep = b'{"eventId":"a","recipient":"a@example.com","template":"welcome","variables":{"x":'
        await bus.publish_raw(config.bus.send_queue, deep + b"[" * 5000 + b"]" * 5000 + b"}}")
    finally:
        await bus.close()


async def dead_letters(config: Any, env: dict[str, str]) -> list[Any]:
    from actors.bus.rabbitmq import RabbitBus

    bus = RabbitBus(config.bus, role="tool", url=config.bus.resolved_url(env))
    await bus.open()
    try:
        return list(await bus.dead_letters(100))
    finally:
        await bus.close()


async def wait_terminal(client: GrpcClient, ids: list[str], timeout: float = 90) -> dict[str, Any]:
    docs: dict[str, Any] = {}
    terminal = (email_pb2.SENT, email_pb2.FAILED, email_pb2.SUPPRESSED)
    with trio.fail_after(timeout):
        while len(docs) < len(ids):
            for event_id in ids:
                if event_id not in docs:
                    got = await client.call(
                        "GetEmail", email_pb2.GetEmailRequest(event_id=event_id)
                    )
                    if got.document.status in terminal:
                        docs[event_id] = got.document
            await trio.sleep(0.2)
    return docs


def test_config_repr_and_redacted_never_show_resolved_secrets(tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("file-secret-0123456789\n")
    env = {
        "MAILACTORS__BUS__URL": "amqp://user:url-secret-0123456789@broker.example/",
        "MAILACTORS__PROVIDER__SMTP__PASSWORD_FILE": str(password_file),
        "MAILACTORS__GRPC__TOKEN_ENV": "T",
        "T": "env-secret-0123456789",
    }
    config = load_config("distributed", env=env)
    assert config.provider.smtp.password() == "file-secret-0123456789"
    assert config.grpc.token(env) == "env-secret-0123456789"
    shown = repr(config) + json.dumps(config.redacted())
    for value in ("url-secret-0123456789", "file-secret-0123456789", "env-secret-0123456789"):
        assert value not in shown
