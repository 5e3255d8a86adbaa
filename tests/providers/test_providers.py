"""The providers behind ``actors.domain.edges.Provider``: MIME building, Maildir, SMTP.

SMTP tests talk to real aiosmtpd servers on loopback (``tests/support/smtp_servers.py``)
through the runtime's asyncio edge, and check the bytes the server received.
Throughput is measured and printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import tempfile
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from aiosmtpd.smtp import AuthResult

from actors.domain.edges import Failure, OutgoingEmail
from actors.domain.mime import (
    EVENT_ID_HEADER,
    build_message,
    message_id_for,
    needs_smtputf8,
    render_bytes,
)
from actors.providers.maildir import MaildirProvider
from actors.providers.smtp import SmtpProvider, classify_reply, parse_retry_after
from runtime import AsyncioEdge, open_asyncio_edge, run_with_asyncio_host
from tests.support.emails import outgoing_email
from tests.support.smtp_servers import CapturingServer, FaultServer, free_port

SENDER = "Mailactors <noreply@example.com>"


def outgoing(i: int = 1, **changes: Any) -> OutgoingEmail:
    code = f"{i:06d}"
    welcome = {
        "sender": SENDER,
        "subject": f"Welcome, Ana ({i})",
        "text": f"Hello Ana,\n\nyour code is {code}.\n",
        "html": f"<p>Hello <b>Ana</b>, your code is {code}.</p>",
    }
    return outgoing_email(i, **(welcome | changes))


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def content(part: Any) -> Any:
    """A part's content; text with the wire's CRLF line ends turned back into "\\n"."""
    value = part.get_content()
    return value.replace("\r\n", "\n") if isinstance(value, str) else value


def body(msg: EmailMessage, kind: str) -> str:
    part = msg.get_body((kind,))
    assert part is not None, f"no {kind} body"
    return str(content(part))


# -- MIME ------------------------------------------------------------------------------


def test_text_only_message() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    msg = parse(render_bytes(build_message(outgoing(7, html=None), date=when)))
    assert msg["From"] == SENDER
    assert msg["From"].addresses[0].addr_spec == "noreply@example.com"
    assert msg["To"] == "ana@example.org"
    assert msg["Subject"] == "Welcome, Ana (7)"
    assert msg["Date"].datetime == when
    assert msg["Message-ID"] == "<ev-7@example.com>"
    assert msg[EVENT_ID_HEADER] == "ev-7"
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert content(msg) == "Hello Ana,\n\nyour code is 000007.\n"


def test_text_and_html_alternative() -> None:
    data = render_bytes(build_message(outgoing(3)))
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    msg = parse(data)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert body(msg, "plain") == "Hello Ana,\n\nyour code is 000003.\n"
    html = body(msg, "html")
    assert html == "<p>Hello <b>Ana</b>, your code is 000003.</p>\n"
    assert not msg.defects and all(not p.defects for p in msg.walk())


def test_attachments_and_extra_headers() -> None:
    pdf = b"%PDF-1.4\x00\xff" * 100
    out = outgoing(
        4,
        attachments=[
            ("report é.pdf", "application/pdf", pdf),
            ("notes.txt", "text/plain", b"hi\n"),
        ],
        headers={"Reply-To": "help@example.com", "List-Unsubscribe": "<mailto:u@example.com>"},
    )
    msg = parse(render_bytes(build_message(out)))
    assert msg.get_content_type() == "multipart/mixed"
    first, *rest = msg.iter_parts()
    assert first.get_content_type() == "multipart/alternative"
    assert msg["Reply-To"] == "help@example.com"
    assert msg["List-Unsubscribe"] == "<mailto:u@example.com>"
    attachments = [
        (a.get_filename(), a.get_content_type(), content(a)) for a in msg.iter_attachments()
    ]
    assert attachments == [
        ("report é.pdf", "application/pdf", pdf),
        ("notes.txt", "text/plain", "hi\n"),
    ]
    assert "MIME-Version" not in rest[0]  # only the top level says it
    assert msg.get_body(("html",)) is not None


def test_non_ascii_subject_and_body() -> None:
    out = outgoing(5, subject="Bienvenue, José — ça va ?", text="Olá José\n", html=None)
    data = render_bytes(build_message(out))
    assert b"=?utf-8?" in data.split(b"\r\n\r\n")[0]  # header encoded (RFC 2047)
    msg = parse(data)
    assert msg["Subject"] == "Bienvenue, José — ça va ?"
    assert msg["Content-Transfer-Encoding"] == "8bit"
    assert content(msg) == "Olá José\n"
    # For a server without 8BITMIME the body is re-encoded as 7-bit.
    seven = render_bytes(build_message(out), eight_bit=False)
    assert seven.isascii()
    assert content(parse(seven)) == "Olá José\n"


def test_long_lines_fall_back_to_the_content_manager() -> None:
    text = "x" * 2000 + "\n"
    msg = parse(render_bytes(build_message(outgoing(6, text=text, html=None))))
    assert msg["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert content(msg) == text


def test_boundary_in_the_text_gets_a_new_boundary() -> None:
    first = build_message(outgoing(8))
    boundary = first.get_boundary()
    assert boundary is not None
    tricky = outgoing(8, text=f"--{boundary}\nnot a part\n")
    msg = parse(render_bytes(build_message(tricky)))
    assert msg.get_boundary() != boundary
    assert body(msg, "plain") == f"--{boundary}\nnot a part\n"


def test_internationalised_address_makes_an_smtputf8_message() -> None:
    msg = build_message(outgoing(9, recipient="josé@exämple.org"))
    assert needs_smtputf8(msg)
    data = render_bytes(msg)
    assert "To: josé@exämple.org".encode() in data
    assert not needs_smtputf8(build_message(outgoing(9)))


def test_message_id_for() -> None:
    assert message_id_for("ev-1", "example.com") == "<ev-1@example.com>"
    with pytest.raises(ValueError, match="Message-ID"):
        message_id_for("ev\r\n1", "example.com")
    with pytest.raises(ValueError, match="Message-ID"):
        message_id_for("a@b", "example.com")


@pytest.mark.parametrize(
    ("changes", "header"),
    [
        ({"sender": "a@example.com\r\nBcc: victim@example.net"}, "From"),
        ({"recipient": "ana@example.org\nBcc: x@y"}, "To"),
        ({"subject": "Hi\r\nX-Injected: 1"}, "Subject"),
        ({"subject": "Hi\x00"}, "Subject"),
        # what str.splitlines (and so the email package) also ends a line at
        ({"subject": "Hi\x0bX-Injected: 1"}, "Subject"),
        ({"subject": "Hi\x0cX-Injected: 1"}, "Subject"),
        ({"subject": "Hi\x1eX-Injected: 1"}, "Subject"),
        ({"subject": "Hi\x85X-Injected: 1"}, "Subject"),
        ({"headers": {"Reply-To": "a@b\u2028X: y"}}, "Reply-To"),
        ({"message_id": "<a@b>\r\nX: y"}, "Message-ID"),
        ({"event_id": "ev\n1"}, EVENT_ID_HEADER),
        ({"headers": {"Reply-To": "a@b\r\nX: y"}}, "Reply-To"),
        ({"headers": {"Bad Name": "v"}}, "Bad Name"),
        ({"headers": {"Content-Type": "text/html"}}, "Content-Type"),
        ({"attachments": [("a\r\n.txt", "text/plain", b"")]}, "Content-Disposition"),
        ({"attachments": [("a.txt", "text/plain\r\nX: y", b"")]}, "Content-Type"),
    ],
)
def test_line_breaks_in_headers_are_refused(changes: dict[str, Any], header: str) -> None:
    with pytest.raises(ValueError, match=header):
        build_message(outgoing(1, **changes))


# -- Maildir ---------------------------------------------------------------------------


async def test_maildir_writes_readable_messages(tmp_path: Path) -> None:
    provider = MaildirProvider(tmp_path / "mail")
    await provider.open()
    results = [await provider.send(outgoing(i)) for i in range(3)]
    await provider.close()
    assert all(r.ok and r.provider == "maildir" and r.failure is None for r in results)
    box = mailbox.Maildir(tmp_path / "mail", create=False)
    assert sorted(box.keys()) == sorted(str(r.message_id) for r in results)
    for i, result in enumerate(results):
        assert result.message_id is not None
        msg = parse(box.get_bytes(result.message_id))
        assert msg["Message-ID"] == f"<ev-{i}@example.com>"
        assert msg[EVENT_ID_HEADER] == f"ev-{i}"
        assert f"your code is {i:06d}" in body(msg, "plain")
    assert os.listdir(tmp_path / "mail" / "tmp") == []
    assert provider.statistics().sent == 3


async def test_maildir_concurrent_sends_are_grouped(tmp_path: Path) -> None:
    provider = MaildirProvider(tmp_path / "mail", fsync=True)
    await provider.open()
    keys: list[str | None] = []

    async def one(i: int) -> None:
        result = await provider.send(outgoing(i))
        assert result.ok
        keys.append(result.message_id)

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(one, i)
    stats = provider.statistics()
    assert len(set(keys)) == 50 and stats.sent == 50
    assert stats.batches < 50  # several messages per worker-thread hop
    assert len(mailbox.Maildir(tmp_path / "mail", create=False)) == 50


async def test_maildir_send_many_writes_a_batch_in_one_hop_and_fails_alone(
    tmp_path: Path,
) -> None:
    provider = MaildirProvider(tmp_path / "mail")
    await provider.open()
    emails = [outgoing(i) for i in range(20)]
    emails[7] = outgoing(7, subject="a\r\nb")  # cannot be built: that one alone fails
    results = await provider.send_many(emails)
    assert len(results) == 20
    assert [r.ok for r in results] == [i != 7 for i in range(20)]
    assert results[7].failure is Failure.PERMANENT and "Subject" in (results[7].reply or "")
    stats = provider.statistics()
    assert (stats.sent, stats.failed, stats.batches) == (19, 1, 1)
    box = mailbox.Maildir(tmp_path / "mail", create=False)
    assert sorted(m["Subject"] for m in box) == sorted(
        f"Welcome, Ana ({i})" for i in range(20) if i != 7
    )


async def test_maildir_failures_are_classified(tmp_path: Path) -> None:
    provider = MaildirProvider(tmp_path / "mail")
    with pytest.raises(RuntimeError, match="open"):
        await provider.send(outgoing())
    await provider.open()
    bad = await provider.send(outgoing(subject="a\r\nb"))
    assert not bad.ok and bad.failure is Failure.PERMANENT and "Subject" in (bad.reply or "")
    os.rmdir(tmp_path / "mail" / "tmp")  # the disk "breaks"
    broken = await provider.send(outgoing())
    assert not broken.ok and broken.failure is Failure.TRANSIENT
    assert "maildir write failed" in (broken.reply or "")


@pytest.mark.parametrize("cancel_when", ["lock taken", "batch in the thread"])
async def test_maildir_cancelled_senders_leave_the_queue(tmp_path: Path, cancel_when: str) -> None:
    provider = MaildirProvider(tmp_path / "mail")
    await provider.open()
    with trio.move_on_after(0):
        await provider.send(outgoing(1))
    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(provider.send, outgoing(i))
        if cancel_when == "lock taken":  # the first sender holds the lock, nothing written
            await trio.lowlevel.checkpoint()
        else:  # the first sender's batch of ten is being written
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    stats = provider.statistics()
    assert stats.queued == 0
    assert stats.sent == (0 if cancel_when == "lock taken" else 10)
    assert len(mailbox.Maildir(tmp_path / "mail", create=False)) == stats.sent
    result = await provider.send(outgoing(99))
    assert result.ok


# -- SMTP ------------------------------------------------------------------------------


async def test_smtp_delivers_the_real_bytes(edge: AsyncioEdge) -> None:
    async with CapturingServer() as server:
        provider = SmtpProvider(server.host, server.port, timeout=5.0)
        await provider.open()
        pdf = b"%PDF-1.4 fake"
        result = await provider.send(
            outgoing(42, attachments=[("invoice.pdf", "application/pdf", pdf)])
        )
        await provider.close()
    assert result.ok and result.code == 250 and result.failure is None
    [received] = server.messages()
    assert result.message_id == received_queue_id(result.reply)
    assert received.mail_from == "noreply@example.com"  # the bare address, not the From value
    assert received.rcpt_tos == ["ana@example.org"]
    assert "BODY=8BITMIME" in received.mail_options
    msg = parse(received.data)
    assert msg["From"] == SENDER
    assert msg["To"] == "ana@example.org"
    assert msg["Subject"] == "Welcome, Ana (42)"
    assert msg["Message-ID"] == "<ev-42@example.com>"
    assert msg[EVENT_ID_HEADER] == "ev-42"
    assert "your code is 000042" in body(msg, "plain")
    assert "<b>Ana</b>" in body(msg, "html")
    [attachment] = msg.iter_attachments()
    assert attachment.get_filename() == "invoice.pdf" and content(attachment) == pdf


def received_queue_id(reply: str | None) -> str:
    assert reply is not None and "queued as" in reply
    return reply.rsplit(" ", 1)[1]


async def test_smtp_internationalised_address(edge: AsyncioEdge) -> None:
    async with CapturingServer() as server:
        provider = SmtpProvider(server.host, server.port, timeout=5.0)
        await provider.open()
        result = await provider.send(outgoing(1, recipient="josé@example.org"))
        await provider.close()
    assert result.ok, result
    [received] = server.messages()
    assert received.rcpt_tos == ["josé@example.org"]
    assert "SMTPUTF8" in received.mail_options
    assert parse(received.data)["To"] == "josé@example.org"


async def test_smtp_reuses_connections(edge: AsyncioEdge) -> None:
    async with CapturingServer() as server:
        provider = SmtpProvider(server.host, server.port, pool_size=3, timeout=5.0)
        await provider.open()
        for i in range(5):  # one after another: one connection
            assert (await provider.send(outgoing(i))).ok
        assert server.connections == 1
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(provider.send, outgoing(i))
        stats = provider.statistics()
        assert stats.sent == 45 and stats.sends_in_flight == 0
        assert len(server.messages()) == 45
        assert server.connections <= 3 and stats.connects_total <= 3
        await provider.close()
        assert provider.statistics().connections_open == 0


async def test_smtp_reconnects_after_the_server_drops_connections(edge: AsyncioEdge) -> None:
    async with CapturingServer() as server:
        provider = SmtpProvider(server.host, server.port, pool_size=1, timeout=5.0)
        await provider.open()
        assert (await provider.send(outgoing(1))).ok
        await trio.to_thread.run_sync(server.restart)  # the kept-alive connection dies
        result = await provider.send(outgoing(2))
        assert result.ok, result
        assert provider.statistics().connects_total == 2
        await provider.close()
    assert len(server.messages()) == 2


REPLIES = [
    ("421 4.3.2 Service not available, closing channel", 421, Failure.TRANSIENT),
    ("421 4.7.0 Too many connections, slow down", 421, Failure.THROTTLED),
    ("450 4.2.1 Mailbox busy", 450, Failure.TRANSIENT),
    ("451 4.7.1 Please retry after 30 seconds", 451, Failure.THROTTLED),
    ("451 4.3.0 Local error in processing", 451, Failure.TRANSIENT),
    ("452 4.3.1 Insufficient system storage", 452, Failure.TRANSIENT),
    ("454 4.7.0 Temporary authentication failure", 454, Failure.THROTTLED),
    ("550 5.1.1 No such user here", 550, Failure.PERMANENT),
    ("554 5.7.1 Relay access denied", 554, Failure.PERMANENT),
]


@pytest.mark.parametrize(("reply", "code", "failure"), REPLIES)
async def test_smtp_classifies_refusals(
    edge: AsyncioEdge, reply: str, code: int, failure: Failure
) -> None:
    async with FaultServer(
        rcpt_replies={"bad@example.org": reply}, data_replies={"late@example.org": reply}
    ) as server:
        provider = SmtpProvider(server.host, server.port, pool_size=1, timeout=5.0)
        await provider.open()
        for rcpt in ("bad@example.org", "late@example.org"):  # refused at RCPT, after DATA
            result = await provider.send(outgoing(1, recipient=rcpt))
            assert not result.ok
            assert (result.code, result.failure) == (code, failure)
            assert result.reply == reply[4:]
        # The connection survives a refusal (after RSET), except a 421.
        assert (await provider.send(outgoing(2))).ok
        assert provider.statistics().connects_total == (3 if code == 421 else 1)
        await provider.close()
    assert [m.rcpt_tos for m in server.messages()] == [["ana@example.org"]]


async def test_smtp_retry_after_hint(edge: AsyncioEdge) -> None:
    reply = "451 4.7.1 Rate limit exceeded, try again in 2 minutes"
    async with FaultServer(rcpt_replies={"ana@example.org": reply}) as server:
        provider = SmtpProvider(server.host, server.port, timeout=5.0)
        await provider.open()
        result = await provider.send(outgoing())
        await provider.close()
    assert result.failure is Failure.THROTTLED and result.retry_after == 120.0


async def test_smtp_connection_refused(edge: AsyncioEdge) -> None:
    provider = SmtpProvider("127.0.0.1", free_port(), timeout=5.0)
    await provider.open()
    result = await provider.send(outgoing())
    assert not result.ok and result.failure is Failure.TRANSIENT and result.code is None
    assert "connect" in (result.reply or "")
    assert provider.statistics().connections_open == 0


async def test_smtp_server_timeout(edge: AsyncioEdge) -> None:
    async with FaultServer(delay=1.0) as server:
        provider = SmtpProvider(server.host, server.port, timeout=0.3)
        await provider.open()
        result = await provider.send(outgoing())
        assert not result.ok and result.failure is Failure.TRANSIENT
        assert "Timeout" in (result.reply or "")
        assert provider.statistics().connections_open == 0  # dropped
        await provider.close()


async def test_smtp_cancelled_send_drops_its_connection(edge: AsyncioEdge) -> None:
    async with FaultServer(delay=0.3) as server:
        provider = SmtpProvider(server.host, server.port, pool_size=1, timeout=5.0)
        await provider.open()
        assert (await provider.send(outgoing(1))).ok
        with trio.move_on_after(0.1):
            await provider.send(outgoing(2))
        stats = provider.statistics()
        assert stats.connections_open == 0 and stats.sends_in_flight == 0
        assert (await provider.send(outgoing(3))).ok
        await provider.close()


async def test_smtp_unbuildable_message_is_permanent(edge: AsyncioEdge) -> None:
    provider = SmtpProvider("127.0.0.1", free_port())
    await provider.open()
    result = await provider.send(outgoing(subject="x\ny"))
    assert result.failure is Failure.PERMANENT and "Subject" in (result.reply or "")


def accept_only(password: str) -> Any:
    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = data.login == b"mailer" and data.password == password.encode()
        return AuthResult(success=ok, handled=False)

    return authenticator


async def test_smtp_login_and_password_never_shown(edge: AsyncioEdge) -> None:
    secret = "s3cr3t-Pa55"
    async with CapturingServer(authenticator=accept_only(secret), auth_require_tls=False) as server:
        good = SmtpProvider(server.host, server.port, username="mailer", password=secret)
        bad = SmtpProvider(server.host, server.port, username="mailer", password=secret + "x")
        await good.open()
        await bad.open()
        ok = await good.send(outgoing(1))
        refused = await bad.send(outgoing(2))
        await good.close()
        await bad.close()
    assert ok.ok
    assert not refused.ok and refused.code == 535 and refused.failure is Failure.PERMANENT
    for shown in (repr(good), str(good), repr(bad), repr(vars(good)), repr(refused), repr(ok)):
        assert secret not in shown
    assert "password='***'" in repr(good)


def test_smtp_under_the_guest_bridge() -> None:
    """The same provider with Trio as a guest on a real asyncio loop (how services run)."""

    async def main(port: int) -> tuple[str, bool]:
        async with open_asyncio_edge() as edge:
            provider = SmtpProvider("127.0.0.1", port, timeout=5.0)
            await provider.open()
            result = await provider.send(outgoing(1))
            await provider.close()
            return edge.name, result.ok

    with CapturingServer() as server:
        assert run_with_asyncio_host(main, server.port) == ("guest", True)
        assert len(server.messages()) == 1


def test_classify_and_retry_after() -> None:
    assert classify_reply(None, "") is Failure.TRANSIENT
    assert classify_reply(250, "weird") is Failure.TRANSIENT
    assert classify_reply(421, "4.7.0 Try later") is Failure.THROTTLED
    assert classify_reply(451, "Requested action aborted: rate exceeded") is Failure.THROTTLED
    assert classify_reply(451, "Error: separate failure") is Failure.TRANSIENT  # "rate" as a word
    assert classify_reply(550, "5.7.1 too many") is Failure.PERMANENT
    assert parse_retry_after("retry after 30 seconds") == 30.0
    assert parse_retry_after("Retry-After: 12") == 12.0
    assert parse_retry_after("try again in 1.5 min") == 90.0
    assert parse_retry_after("please try again later") is None


# -- throughput: every email arrives, at no less than a floor far below the measured rate --
#
# The figures themselves belong to the bench (``supervisor.py bench``); here a run
# must deliver every email once and not collapse (the floors are about 1/20 of what
# these machines measure, so a busy CI box does not trip them).


def test_every_provider_implements_the_protocol(tmp_path: Path) -> None:
    from actors.domain.edges import Provider
    from actors.providers.chain import ChainProvider
    from actors.providers.ses import SesProvider
    from tests.support.protocols import assert_implements

    maildir = MaildirProvider(tmp_path / "m")
    smtp = SmtpProvider("127.0.0.1", 25)
    ses = SesProvider("eu-west-1", endpoint_url="http://127.0.0.1:1")
    for provider in (maildir, smtp, ses, ChainProvider([smtp, ses])):
        assert_implements(provider, Provider)


async def test_maildir_throughput_delivers_every_email_once() -> None:
    emails = [outgoing(i) for i in range(2000)]
    with tempfile.TemporaryDirectory() as tmp:
        for concurrency in (1, 16):
            provider = MaildirProvider(Path(tmp) / f"c{concurrency}")
            await provider.open()
            start = time.perf_counter()
            await run_concurrently(provider.send, emails, concurrency)
            elapsed = time.perf_counter() - start
            await provider.close()
            box = mailbox.Maildir(Path(tmp) / f"c{concurrency}", create=False)
            assert len(box) == len(emails)
            assert len(emails) / elapsed > 100, (
                f"maildir, {concurrency}: {len(emails) / elapsed:.0f}/s"
            )


async def test_smtp_throughput_delivers_every_email_once(edge: AsyncioEdge) -> None:
    emails = [outgoing(i) for i in range(600)]
    async with CapturingServer() as server:
        for pool in (1, 8):
            server.clear()
            provider = SmtpProvider(server.host, server.port, pool_size=pool, timeout=10.0)
            await provider.open()
            start = time.perf_counter()
            await run_concurrently(provider.send, emails, pool)
            elapsed = time.perf_counter() - start
            await provider.close()
            assert len(server.messages()) == len(emails)
            assert server.connections <= pool * 2  # the pool reuses its connections
            assert len(emails) / elapsed > 20, f"smtp, pool {pool}: {len(emails) / elapsed:.0f}/s"


async def run_concurrently(send: Any, emails: list[OutgoingEmail], concurrency: int) -> None:
    async def worker(k: int) -> None:
        for e in emails[k::concurrency]:
            result = await send(e)
            assert result.ok, result

    async with trio.open_nursery() as nursery:
        for k in range(concurrency):
            nursery.start_soon(worker, k)
