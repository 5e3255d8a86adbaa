"""The Amazon SES provider, against moto's SES v2 API server and a server that fails like SES.

Nothing here talks to the real SES: moto (server mode, on loopback) checks the
request, keeps the raw message it was sent and returns a MessageId; throttling and
5xx answers, which moto cannot be made to give, come from ``FakeSesServer``.
"""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from actors.auth.service import RequestAccepted, RequestEmail
from actors.domain.edges import Failure, OutgoingEmail
from actors.domain.schema import Status
from actors.profiles.embedded import open_embedded
from actors.providers.build import make_provider
from actors.providers.ses import SesProvider, classify_error, resolve_region
from config import ConfigError, load_config
from runtime import AsyncioEdge
from tests.support.ses_servers import SECRET_KEY, FakeSesServer, MotoSes, Reply

REGION = "eu-west-1"
SENDER = "noreply@mailactors.test"


def outgoing(i: int = 1, **changes: Any) -> OutgoingEmail:
    base = OutgoingEmail(
        event_id=f"ev-{i}",
        sender=f"Mailactors <{SENDER}>",
        recipient="ana@example.org",
        subject=f"Bienvenue, Anaïs ({i})",
        text=f"Hello Anaïs,\n\nyour code is {i:06d}.\n",
        html=f"<p>Hello <b>Anaïs</b>, your code is {i:06d}.</p>",
        message_id=f"<ev-{i}@mailactors.test>",
        attachments=[("r.pdf", "application/pdf", b"%PDF-1.4 \x00\xff")],
    )
    return msgspec.structs.replace(base, **changes)


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


@pytest.fixture
async def ses(moto_ses: MotoSes, edge: AsyncioEdge) -> AsyncIterator[SesProvider]:
    moto_ses.verify(SENDER, REGION)
    provider = SesProvider(REGION, endpoint_url=moto_ses.url)
    await provider.open()
    try:
        yield provider
    finally:
        await provider.close()


# -- against moto --------------------------------------------------------------------


async def test_raw_message_reaches_ses_byte_for_byte_with_its_message_id(
    ses: SesProvider, moto_ses: MotoSes, edge: AsyncioEdge
) -> None:
    before = edge.statistics().calls_total
    result = await ses.send(outgoing(1))
    assert edge.statistics().calls_total - before == 1  # one edge crossing per send
    assert result.ok and result.provider == "ses" and result.failure is None
    [sent] = moto_ses.sent(REGION)
    assert result.message_id == sent.message_id
    assert "ana@example.org" in sent.destinations
    msg = parse(sent.data)
    assert msg["Message-ID"] == "<ev-1@mailactors.test>"
    assert msg["X-Mailactors-Event-Id"] == "ev-1"
    assert msg["Subject"] == "Bienvenue, Anaïs (1)"
    assert msg["To"] == "ana@example.org"
    assert "Anaïs" in msg.get_body(("plain",)).get_content()
    assert "<b>Anaïs</b>" in msg.get_body(("html",)).get_content()
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "r.pdf"
    assert attachment.get_content() == b"%PDF-1.4 \x00\xff"
    assert sent.data.isascii()  # rendered 7-bit for SES
    assert ses.statistics().sent == 1


async def test_many_sends_share_one_client(ses: SesProvider, moto_ses: MotoSes) -> None:
    results: list[Any] = []

    async def one(i: int) -> None:
        results.append(await ses.send(outgoing(i)))

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(one, i)
    assert all(r.ok for r in results) and len(results) == 20
    assert {r.message_id for r in results} == {s.message_id for s in moto_ses.sent(REGION)}


async def test_unverified_sender_is_message_rejected_permanent(
    ses: SesProvider, moto_ses: MotoSes
) -> None:
    result = await ses.send(outgoing(2, sender="stranger@elsewhere.test"))
    assert not result.ok and result.failure is Failure.PERMANENT
    assert result.reply is not None and result.reply.startswith("MessageRejected")
    assert "HTTP 400" in result.reply
    assert moto_ses.sent(REGION) == []


async def test_configuration_set_is_sent(moto_ses: MotoSes, edge: AsyncioEdge) -> None:
    with FakeSesServer([Reply.ok("fake-1")]) as server:
        provider = SesProvider(REGION, endpoint_url=server.url, configuration_set="tracking")
        await provider.open()
        try:
            result = await provider.send(outgoing(3))
        finally:
            await provider.close()
    assert result.ok and result.message_id == "fake-1"
    [(path, body)] = server.requests
    assert path == "/v2/email/outbound-emails"
    request = msgspec.json.decode(body)
    assert request["ConfigurationSetName"] == "tracking"
    assert request["Destination"] == {"ToAddresses": ["ana@example.org"]}
    assert set(request["Content"]) == {"Raw"}


async def test_the_secret_key_never_shows_in_logs_or_repr(
    ses: SesProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await ses.send(outgoing(4))
        await ses.send(outgoing(5, sender="stranger@elsewhere.test"))
    assert caplog.records  # botocore did log at DEBUG
    assert all(SECRET_KEY not in r.getMessage() for r in caplog.records)
    assert SECRET_KEY not in repr(ses)


# -- error classification ------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "failure"),
    [
        (Reply(400, "ThrottlingException", "Maximum sending rate exceeded."), Failure.THROTTLED),
        (Reply(429, "TooManyRequestsException", "Too Many Requests"), Failure.THROTTLED),
        (Reply(400, "Throttling", "Maximum sending rate exceeded."), Failure.THROTTLED),
        (Reply(400, "LimitExceededException", "Daily message quota exceeded."), Failure.THROTTLED),
        (Reply(400, "MessageRejected", "Email address is not verified."), Failure.PERMANENT),
        (
            Reply(400, "MailFromDomainNotVerifiedException", "MAIL FROM domain not verified"),
            Failure.PERMANENT,
        ),
        (Reply(400, "BadRequestException", "Illegal address"), Failure.PERMANENT),
        (Reply(500, "InternalFailure", "internal error"), Failure.TRANSIENT),
        (Reply(503, "ServiceUnavailable", "try later"), Failure.TRANSIENT),
        (Reply(502), Failure.TRANSIENT),
        (Reply(400, "SendingPausedException", "sending is paused"), Failure.TRANSIENT),
        (Reply(403, "UnrecognizedClientException", "bad token"), Failure.TRANSIENT),
    ],
)
async def test_ses_errors_are_classified(
    reply: Reply, failure: Failure, aws_env: dict[str, str], edge: AsyncioEdge
) -> None:
    with FakeSesServer([reply]) as server:
        provider = SesProvider(REGION, endpoint_url=server.url, timeout=5)
        await provider.open()
        try:
            result = await provider.send(outgoing())
        finally:
            await provider.close()
    assert not result.ok and result.failure is failure, result.reply
    assert len(server.requests) == 1  # botocore's own retries are off
    assert result.reply is not None and f"HTTP {reply.status}" in result.reply
    if reply.code:
        assert result.reply.startswith(reply.code)


async def test_retry_after_header_becomes_the_hint(
    aws_env: dict[str, str], edge: AsyncioEdge
) -> None:
    reply = Reply(429, "TooManyRequestsException", "slow down", headers={"Retry-After": "7"})
    with FakeSesServer([reply]) as server:
        provider = SesProvider(REGION, endpoint_url=server.url)
        await provider.open()
        try:
            result = await provider.send(outgoing())
        finally:
            await provider.close()
    assert result.failure is Failure.THROTTLED and result.retry_after == 7.0


async def test_keeps_its_connection_between_sends(
    aws_env: dict[str, str], edge: AsyncioEdge
) -> None:
    replies = [Reply.ok(f"id-{i}") for i in range(5)]
    with FakeSesServer(replies) as server:
        provider = SesProvider(REGION, endpoint_url=server.url)
        await provider.open()
        try:
            ids = [(await provider.send(outgoing(i))).message_id for i in range(5)]
        finally:
            await provider.close()
    assert ids == [f"id-{i}" for i in range(5)]
    assert server.connections == 1


async def test_refused_connection_is_transient(aws_env: dict[str, str], edge: AsyncioEdge) -> None:
    with FakeSesServer() as server:
        url = server.url  # a port that was just free: nothing listens there after stop()
    provider = SesProvider(REGION, endpoint_url=url, timeout=5)
    await provider.open()
    try:
        result = await provider.send(outgoing())
    finally:
        await provider.close()
    assert not result.ok and result.failure is Failure.TRANSIENT
    assert result.reply and "connect" in result.reply.lower()


async def test_a_timeout_is_transient(aws_env: dict[str, str], edge: AsyncioEdge) -> None:
    with FakeSesServer([Reply(200, delay=3.0)]) as server:
        provider = SesProvider(REGION, endpoint_url=server.url, timeout=0.5)
        await provider.open()
        try:
            with trio.fail_after(10):
                result = await provider.send(outgoing())
        finally:
            await provider.close()
    assert not result.ok and result.failure is Failure.TRANSIENT
    assert result.reply and "timeout" in result.reply.lower()


async def test_a_header_injection_is_permanent_without_a_request(
    aws_env: dict[str, str], edge: AsyncioEdge
) -> None:
    with FakeSesServer() as server:
        provider = SesProvider(REGION, endpoint_url=server.url)
        await provider.open()
        try:
            result = await provider.send(outgoing(subject="hi\r\nBcc: x@evil.test"))
        finally:
            await provider.close()
    assert result.failure is Failure.PERMANENT and server.requests == []


def test_classify_error_by_code_message_and_status() -> None:
    assert classify_error("Anything", "Maximum sending rate exceeded.", 400) is Failure.THROTTLED
    assert classify_error("", "", 429) is Failure.THROTTLED
    assert classify_error("MessageRejected", "", 400) is Failure.PERMANENT
    assert classify_error("SomethingNew", "", 400) is Failure.PERMANENT
    assert classify_error("SomethingNew", "", 500) is Failure.TRANSIENT
    assert classify_error("", "", None) is Failure.TRANSIENT


async def test_open_without_credentials_fails(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, edge: AsyncioEdge
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    from actors.providers.ses import SesCredentialsMissing

    provider = SesProvider(REGION, endpoint_url="http://127.0.0.1:9")
    with pytest.raises(SesCredentialsMissing, match="no AWS credentials"):
        await provider.open()


# -- region and configuration --------------------------------------------------------


def test_region_comes_from_the_environment_then_the_profile(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert resolve_region("ap-south-1") == "ap-south-1"
    assert resolve_region() is None
    (tmp_path / "aws-config").write_text(
        "[default]\nregion = sa-east-1\n[profile mail]\nregion = us-west-2\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    assert resolve_region() == "sa-east-1"
    assert resolve_region(profile="mail") == "us-west-2"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-north-1")
    assert resolve_region() == "eu-north-1"
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert resolve_region() == "eu-central-1"


def ses_config(tmp_path: Path, **provider: Any) -> Any:
    overrides: dict[str, Any] = {
        "store": {"sqlite_path": str(tmp_path / "emails.sqlite3"), "batch_ms": 2.0},
        "provider": {"sender": SENDER, "maildir_path": str(tmp_path / "maildir"), **provider},
        "grpc": {"auth_port": 0},
        "http": {"port": 0},
        "email_server": {"idempotency_path": str(tmp_path / "sent.sqlite3")},
        "retry": {"base_delay_s": 0.01, "max_delay_s": 0.05, "max_attempts": 2},
    }
    return load_config("embedded", env={}, overrides=overrides)


def test_ses_without_any_region_stops_start_up(aws_env: dict[str, str], tmp_path: Path) -> None:
    config = ses_config(tmp_path, kind="ses")
    with pytest.raises(ConfigError) as info:
        make_provider(config.provider)
    assert info.value.key == "provider.ses.region"
    assert "AWS_REGION" in str(info.value)


def test_ses_region_from_the_environment_is_enough(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    provider = make_provider(ses_config(tmp_path, kind="ses").provider)
    assert isinstance(provider, SesProvider) and provider.region == "us-east-2"


def test_an_unknown_aws_profile_stops_start_up(aws_env: dict[str, str], tmp_path: Path) -> None:
    config = ses_config(tmp_path, kind="ses", ses={"profile": "nope"})
    with pytest.raises(ConfigError) as info:
        make_provider(config.provider)
    assert info.value.key == "provider.ses.profile" and "nope" in str(info.value)


def test_ses_config_keys_and_endpoint_check(tmp_path: Path) -> None:
    config = ses_config(
        tmp_path,
        kind="ses",
        ses={
            "region": "eu-west-3",
            "endpoint_url": "http://127.0.0.1:4566",
            "configuration_set": "cs",
        },
    )
    provider = make_provider(config.provider)
    assert isinstance(provider, SesProvider)
    assert (provider.region, provider.endpoint_url, provider.configuration_set) == (
        "eu-west-3",
        "http://127.0.0.1:4566",
        "cs",
    )
    with pytest.raises(ConfigError, match=r"provider\.ses.*endpoint_url must start with http"):
        ses_config(tmp_path, kind="ses", ses={"endpoint_url": "ftp://x"})
    with pytest.raises(
        ConfigError, match=r"provider\.kind: expected one of .*'ses'.*got 'sendgrid'"
    ):
        ses_config(tmp_path, kind="sendgrid")


# -- end to end ----------------------------------------------------------------------


def welcome_ada() -> RequestEmail:
    return RequestEmail(
        recipient="ada@example.com",
        template="welcome",
        variables={"name": "Ada", "product": "Acme"},
    )


async def test_embedded_system_records_the_ses_message_id(
    moto_ses: MotoSes, tmp_path: Path
) -> None:
    moto_ses.verify(SENDER, REGION)
    config = ses_config(tmp_path, kind="ses", ses={"region": REGION, "endpoint_url": moto_ses.url})
    async with open_embedded(config, grpc=False, shutdown=10.0) as app:
        accepted = await app.request(welcome_ada())
        assert isinstance(accepted, RequestAccepted)
        doc = await app.wait_terminal(accepted.event_id)
        stored = await app.store.get(accepted.event_id)
    assert doc.status is Status.SENT, doc.error
    [sent] = moto_ses.sent(REGION)
    assert doc.provider == "ses"
    assert doc.provider_message_id == sent.message_id
    assert stored is not None and stored.provider_message_id == sent.message_id
    msg = parse(sent.data)
    assert msg["X-Mailactors-Event-Id"] == accepted.event_id
    assert "Ada" in msg.get_body(("plain",)).get_content()


async def test_embedded_system_fails_a_rejected_email_without_retrying(
    moto_ses: MotoSes, tmp_path: Path
) -> None:
    # The sender is not verified: SES answers MessageRejected, a permanent failure.
    config = ses_config(tmp_path, kind="ses", ses={"region": REGION, "endpoint_url": moto_ses.url})
    async with open_embedded(config, grpc=False, shutdown=10.0) as app:
        accepted = await app.request(welcome_ada())
        doc = await app.wait_terminal(accepted.event_id)
    assert doc.status is Status.FAILED and doc.attempts == 1
    assert doc.error and "MessageRejected" in doc.error
    assert doc.provider == "ses"
