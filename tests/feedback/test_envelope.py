"""The return path: an email sent through the pipeline has MAIL FROM = its VERP address."""

from __future__ import annotations

from pathlib import Path

import msgspec

from actors.domain.schema import Status
from actors.feedback import BounceType, VerpCodec
from tests.support.embedded import embedded_config, request, running
from tests.support.smtp_servers import CapturingServer

KEY = "0123456789abcdef0123456789abcdef"


async def test_each_email_is_sent_with_its_verp_return_path(tmp_path: Path) -> None:
    key_file = tmp_path / "verp-key"
    key_file.write_text(KEY + "\n")
    async with CapturingServer() as smtp:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            bounces={"enabled": True, "domain": "bounce.mailactors.test",
                     "secret_file": str(key_file)},  # fmt: skip
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
    """Full circle in one embedded system: sent with a return path, bounced to it, applied."""
    from actors.feedback import inbound_smtp_server
    from tests.support.feedback import KEY as TEST_KEY
    from tests.support.feedback import RecordingSink, bounces_config, sample, send

    sink = RecordingSink()
    async with CapturingServer() as smtp:
        base = bounces_config(tmp_path)
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            bounces=msgspec.structs.asdict(base.bounces),
        )
        async with running(config) as app:
            spec = inbound_smtp_server(config, sink)
            assert spec is not None
            await app.system.spawn(spec)
            listening = app.system.snapshot().by_path()["inbound-smtp"].extra["listening"]
            port = int(listening[0].rpartition(":")[2])
            event_id = (await app.request(request(to="nobody@example.net"))).event_id
            await app.wait_terminal(event_id)
            (sent,) = smtp.messages()
            report = sample("postfix_hard", event_id, sent.mail_from)
            code, _ = await send(port, sent.mail_from, report)
            assert code == 250
    (record,) = sink.records
    assert (record.event_id, record.recipient, record.bounce_type) == (
        event_id, "nobody@example.net", BounceType.HARD)  # fmt: skip
    assert VerpCodec(TEST_KEY, "bounce.mailactors.test").verify(sent.mail_from) is not None
