"""A bounce for a copy of an email (cc, bcc) through the inbound SMTP endpoint of the running
embedded system: the copy's address is suppressed and the report kept in the email's history,
while the email's status stays SENT (its recipient got it)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from actors.domain.schema import EmailDocument, Status
from actors.email_server.suppression import SuppressionList
from tests.support.embedded import embedded_config, request, running
from tests.support.feedback import bounces_config, sample, send
from tests.support.smtp_servers import CapturingServer
from tests.support.waiting import poll_until


async def test_a_dsn_for_a_cc_suppresses_it_and_leaves_the_email_sent(tmp_path: Path) -> None:
    async with CapturingServer() as smtp:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            bounces=msgspec.structs.asdict(bounces_config(tmp_path).bounces),
        )
        async with (
            running(config) as app,
            SuppressionList(config.email_server.idempotency_path) as suppression,
        ):
            listening = app.system.snapshot().by_path()["inbound-smtp"].extra["listening"]
            port = int(listening[0].rpartition(":")[2])
            # The sample bounce names nobody@example.net: here a cc of the email.
            event_id = (
                await app.request(
                    request(to="Someone@example.net", cc=["Nobody@Example.net"],
                            bcc=["hidden@example.net"])
                )
            ).event_id  # fmt: skip
            assert (await app.wait_terminal(event_id)).status is Status.SENT
            (message,) = smtp.messages()
            assert len(message.rcpt_tos) == 3  # one transaction, one return path for all
            verp = message.mail_from

            code, text = await send(port, verp, sample("postfix_hard", event_id, verp))
            assert (code, text) == (250, "2.0.0 OK, 1 report(s) applied")
            entry = suppression.lookup("nobody@example.net")
            assert entry is not None and entry.event_id == event_id
            assert entry.reason.startswith("hard bounce via dsn")
            assert suppression.lookup("someone@example.net") is None

            async def recorded() -> EmailDocument | None:
                doc = await app.store.get(event_id)
                assert doc is not None
                return doc if any(r.feedback for r in doc.history) else None

            await poll_until(recorded, timeout=10, what="the cc's bounce in the history")
            doc = await recorded()
            assert doc is not None
            assert doc.status is Status.SENT and doc.error is None  # the recipient got it
            (record,) = [r for r in doc.history if r.feedback is not None]
            assert record.status is Status.BOUNCED and record.feedback is not None
            assert (record.feedback.recipient, record.feedback.bounce_type) == (
                "nobody@example.net", "hard",
            )  # fmt: skip

            # The cc is not written to again; the recipient still is.
            again = await app.request(request(to="nobody@example.net"))
            assert (await app.wait_terminal(again.event_id)).status is Status.SUPPRESSED
            other = await app.request(request(to="someone@example.net"))
            assert (await app.wait_terminal(other.event_id)).status is Status.SENT


async def test_a_complaint_with_the_address_redacted_is_about_the_one_recipient(
    tmp_path: Path,
) -> None:
    async with CapturingServer() as smtp:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            bounces=msgspec.structs.asdict(bounces_config(tmp_path).bounces),
        )
        async with (
            running(config) as app,
            SuppressionList(config.email_server.idempotency_path) as suppression,
        ):
            listening = app.system.snapshot().by_path()["inbound-smtp"].extra["listening"]
            port = int(listening[0].rpartition(":")[2])
            alone = (await app.request(request(to="Reader@example.org", category="news"))).event_id
            shared = (
                await app.request(request(to="pat@example.org", cc=["quinn@example.org"],
                                          category="news"))
            ).event_id  # fmt: skip
            for event_id in (alone, shared):
                assert (await app.wait_terminal(event_id)).status is Status.SENT
            paths = {m.event_id: m.mail_from for m in smtp.messages()}

            def redacted(event_id: str) -> bytes:
                arf = sample("arf_yahoo", event_id, paths[event_id])
                arf = arf.replace(b"Original-Rcpt-To: <reader@yahoo.example>\n", b"")
                assert b"Original-Rcpt-To" not in arf
                return arf

            code, text = await send(port, paths[alone], redacted(alone))
            assert (code, text) == (250, "2.0.0 OK, 1 report(s) applied")
            entry = suppression.lookup("reader@example.org", "news")
            assert entry is not None and entry.source == "complaint"
            code, text = await send(port, paths[shared], redacted(shared))
            assert "0 report(s) applied, 1 ignored (redacted_recipient)" in text, (code, text)
            assert suppression.lookup("pat@example.org", "news") is None
            assert suppression.lookup("quinn@example.org", "news") is None

            async def complained() -> bool:
                doc = await app.store.get(alone)
                return doc is not None and doc.status is Status.COMPLAINED

            await poll_until(complained, timeout=10, what="the email COMPLAINED")
            doc = await app.store.get(shared)
            assert doc is not None and doc.status is Status.SENT
