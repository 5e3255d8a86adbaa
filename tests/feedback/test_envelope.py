"""The return path: an email sent through the pipeline has MAIL FROM = its VERP address."""

from __future__ import annotations

from pathlib import Path

import msgspec

from actors.domain.schema import Status
from actors.feedback import BounceType, VerpCodec
from tests.support.embedded import embedded_config, request, running
from tests.support.smtp_servers import CapturingServer
from tests.support.waiting import poll_until

KEY = "0123456789abcdef0123456789abcdef"


async def test_each_email_is_sent_with_its_verp_return_path(tmp_path: Path) -> None:
    key_file = tmp_path / "verp-key"
    key_file.write_text(KEY + "\n")
    async with CapturingServer() as smtp:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            bounces={"enabled": True, "domain": "bounce.mailactors.test",
                     "secret_file": str(key_file), "port": 0},  # fmt: skip
        )
        async with running(config) as app:
            ids = [(await app.request(request(to=f"u{i}@example.com"))).event_id for i in range(3)]
            for event_id in ids:
                assert (await app.wait_terminal(event_id)).status is Status.SENT
    codec = VerpCodec(KEY, "bounce.mailactors.test")
    by_id = {m.event_id: m for m in smtp.messages()}
    assert set(by_id) == set(ids)
    for event_id, message in by_id.items():
        assert message.mail_from == codec.address(event_id)
        verified = codec.verify(message.mail_from)
        assert verified is not None and verified.event_id == event_id
        assert b"From: noreply@mailactors.test" in message.data  # the visible sender unchanged


async def test_without_bounces_the_sender_is_the_envelope_sender(tmp_path: Path) -> None:
    async with CapturingServer() as smtp:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
        )
        async with running(config) as app:
            event_id = (await app.request(request())).event_id
            await app.wait_terminal(event_id)
    assert [m.mail_from for m in smtp.messages()] == ["noreply@mailactors.test"]


async def test_a_bounce_of_a_sent_email_comes_back_to_its_email(tmp_path: Path) -> None:
    """Full circle in one embedded system: sent with a return path, bounced to the system's own
    inbound endpoint, applied by its feedback sink: BOUNCED, and the address suppressed."""
    from tests.support.feedback import KEY as TEST_KEY
    from tests.support.feedback import bounces_config, sample, send

    async with CapturingServer() as smtp:
        base = bounces_config(tmp_path)
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            bounces=msgspec.structs.asdict(base.bounces),
        )
        async with running(config) as app:
            listening = app.system.snapshot().by_path()["inbound-smtp"].extra["listening"]
            port = int(listening[0].rpartition(":")[2])
            event_id = (await app.request(request(to="nobody@example.net"))).event_id
            await app.wait_terminal(event_id)
            (sent,) = smtp.messages()
            report = sample("postfix_hard", event_id, sent.mail_from)
            code, _ = await send(port, sent.mail_from, report)
            assert code == 250  # only after the sink applied it

            async def bounced() -> bool:
                doc = await app.store.get(event_id)
                return doc is not None and doc.status is Status.BOUNCED

            await poll_until(bounced, timeout=10, what=f"{event_id} BOUNCED")
            doc = await app.store.get(event_id)
            assert doc is not None
            (record,) = [h for h in doc.history if h.status is Status.BOUNCED]
            assert record.feedback is not None
            assert record.feedback.bounce_type == BounceType.HARD
            # The next email to the address is not sent: suppressed for every category.
            again = (await app.request(request(to="nobody@example.net"))).event_id
            assert (await app.wait_terminal(again)).status is Status.SUPPRESSED
            assert len(smtp.messages()) == 1
    assert VerpCodec(TEST_KEY, "bounce.mailactors.test").verify(sent.mail_from) is not None
