"""The inbound SMTP endpoint says what the sink did with a report: applied, or ignored and why
(a repeat, a bounce naming another address than the email's), in its reply and its counters."""

from __future__ import annotations

from pathlib import Path

import msgspec

from actors.domain.schema import Status
from tests.support.embedded import embedded_config, request, running
from tests.support.feedback import bounces_config, inbound_counts, sample, send
from tests.support.smtp_servers import CapturingServer


async def test_the_reply_and_counters_tell_applied_from_ignored(tmp_path: Path) -> None:
    async with CapturingServer() as smtp:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            bounces=msgspec.structs.asdict(bounces_config(tmp_path).bounces),
        )
        async with running(config) as app:
            listening = app.system.snapshot().by_path()["inbound-smtp"].extra["listening"]
            port = int(listening[0].rpartition(":")[2])
            # The sample bounce names nobody@example.net: right for one email, not the other.
            right = (await app.request(request(to="nobody@example.net"))).event_id
            other = (await app.request(request(to="somebody@example.net"))).event_id
            for event_id in (right, other):
                assert (await app.wait_terminal(event_id)).status is Status.SENT
            paths = {m.rcpt_tos[0]: m.mail_from for m in smtp.messages()}

            report = sample("postfix_hard", right, paths["nobody@example.net"])
            code, text = await send(port, paths["nobody@example.net"], report)
            assert (code, text) == (250, "2.0.0 OK, 1 report(s) applied")
            code, text = await send(port, paths["nobody@example.net"], report)  # again
            assert code == 250 and "0 report(s) applied, 1 ignored (repeat)" in text, text
            wrong = sample("postfix_hard", other, paths["somebody@example.net"])
            code, text = await send(port, paths["somebody@example.net"], wrong)
            assert code == 250 and "0 report(s) applied, 1 ignored (wrong_recipient)" in text, text

            counts = inbound_counts(app.system)
            assert counts.get("feedback_bounce") == 1, counts
            assert counts.get("ignored_repeat") == 1 and counts.get("ignored_wrong_recipient") == 1
            doc = await app.store.get(other)
            assert doc is not None and doc.status is Status.SENT  # the sink did not touch it
