"""The inbound SMTP endpoint, end to end: a real SMTP client (aiosmtplib) sends the samples to
VERP addresses; a recording sink shows what arrived. Forged, over-size and failing cases too."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiosmtplib
import pytest
import trio

from actors.feedback import BounceType, FeedbackKind, InboundMessage, VerpCodec
from runtime import current_edge
from tests.support.feedback import (
    DOMAIN,
    KEY,
    RecordingSink,
    bounces_config,
    declared_size,
    inbound_counts,
    running_inbound,
    sample,
    send,
)

codec = VerpCodec(KEY, DOMAIN)


CASES = [  # sample, kind, bounce type / feedback type
    ("postfix_hard", FeedbackKind.BOUNCE, BounceType.HARD),
    ("exim_hard", FeedbackKind.BOUNCE, BounceType.HARD),
    ("exchange_hard", FeedbackKind.BOUNCE, BounceType.HARD),
    ("exchange2003_hard", FeedbackKind.BOUNCE, BounceType.HARD),
    ("gmail_hard", FeedbackKind.BOUNCE, BounceType.HARD),
    ("gmail_soft", FeedbackKind.BOUNCE, BounceType.SOFT),
    ("yahoo_hard", FeedbackKind.BOUNCE, BounceType.HARD),
    ("postfix_delayed", FeedbackKind.DELAY, None),
    ("arf_yahoo", FeedbackKind.COMPLAINT, None),
]


async def test_reports_by_smtp_reach_the_sink_for_their_email(tmp_path: Path) -> None:
    sink = RecordingSink()
    async with running_inbound(bounces_config(tmp_path), sink) as (system, port):
        sent: dict[str, str] = {}
        for name, _, _ in CASES:
            event_id = str(uuid.uuid4())
            sent[event_id] = name
            code, text = await send(port, codec.address(event_id),
                                    sample(name, event_id, codec.address(event_id)))  # fmt: skip
            assert code == 250, (name, text)
            assert "1 report(s) applied" in text
        # A long eventId: the digest return path, matched through the attached original.
        long_id = "tenant-42:order:" + "7" * 100
        code, _ = await send(port, codec.address(long_id),
                             sample("postfix_hard", long_id, codec.address(long_id)))  # fmt: skip
        assert code == 250
        counts = inbound_counts(system)
    by_id = {r.event_id: r for r in sink.records}
    assert len(sink.records) == len(CASES) + 1
    for event_id, name in sent.items():
        expected = next(c for c in CASES if c[0] == name)
        record = by_id[event_id]
        assert record.kind is expected[1], name
        if record.kind is FeedbackKind.BOUNCE:
            assert record.bounce_type is expected[2], name
            assert record.source == "dsn"
        if record.kind is FeedbackKind.COMPLAINT:
            assert (record.feedback_type, record.source) == ("abuse", "arf")
            assert record.recipient == "reader@yahoo.example"
    assert by_id[long_id].recipient == "nobody@example.net"
    assert counts["feedback_bounce"] == 8 and counts["feedback_complaint"] == 1


async def test_auto_replies_are_accepted_and_not_counted_as_bounces(tmp_path: Path) -> None:
    sink = RecordingSink()
    async with running_inbound(bounces_config(tmp_path), sink) as (system, port):
        for name in ("autoreply_rfc3834", "vacation"):
            event_id = str(uuid.uuid4())
            verp = codec.address(event_id)
            code, text = await send(port, verp, sample(name, event_id, verp), sender="ada@x.test")
            assert (code, "ignored" in text) == (250, True)
        extra = inbound_counts(system)
    assert sink.records == [] and sink.calls == 0
    assert extra["ignored_auto-reply"] == 2


async def test_a_forged_return_path_is_refused_at_rcpt(tmp_path: Path) -> None:
    sink = RecordingSink()
    event_id = str(uuid.uuid4())
    genuine = codec.address(event_id)
    forged = [
        genuine.replace(event_id[:8], "00000000"),  # another eventId, this tag
        VerpCodec("another-key-that-we-never-held!!", DOMAIN).address(event_id),
        f"bounces+{event_id}@{DOMAIN}",  # no tag
    ]
    async with running_inbound(bounces_config(tmp_path), sink) as (system, port):
        for address in forged:
            code, text = await send(port, address, sample("postfix_hard", event_id, address))
            assert code == 550, (address, text)
        assert (await send(port, f"postmaster@{DOMAIN}", b"Subject: hi\n\nx"))[0] == 550
        assert (await send(port, genuine.replace(DOMAIN, "example.org"), b"x"))[0] == 550
        extra = inbound_counts(system)
    assert sink.calls == 0
    assert extra["rcpt_forged"] == 3 and extra["rcpt_refused"] == 5


async def test_an_over_size_message_is_refused_552_unread(tmp_path: Path) -> None:
    sink = RecordingSink()
    config = bounces_config(tmp_path, max_message_bytes=20_000)
    event_id = str(uuid.uuid4())
    verp = codec.address(event_id)
    big = sample("postfix_hard", event_id, verp) + b"x" * 70 + (b"\n" + b"y" * 70) * 400
    async with running_inbound(config, sink) as (system, port):
        code, text = await send(port, verp, big)
        assert code == 552, text
        assert await current_edge().run(declared_size, port, verp) == 552  # MAIL ... SIZE=
        # The connection limit per size is for this message only: the next one goes through.
        assert (await send(port, verp, sample("postfix_hard", event_id, verp)))[0] == 250
        extra = inbound_counts(system)
    assert len(sink.records) == 1
    assert extra.get("messages") == 1  # the big one never reached a handler


async def test_a_failing_sink_yields_451_and_the_retry_is_applied(tmp_path: Path) -> None:
    sink = RecordingSink()
    sink.fail = 1
    event_id = str(uuid.uuid4())
    verp = codec.address(event_id)
    data = sample("gmail_hard", event_id, verp)
    async with running_inbound(bounces_config(tmp_path), sink) as (system, port):
        code, text = await send(port, verp, data)
        assert code == 451, text
        assert sink.records == []
        code, _ = await send(port, verp, data)  # the MTA keeps the message and retries
        assert code == 250
    (record,) = sink.records
    assert (record.event_id, record.bounce_type, record.status_code) == (
        event_id, BounceType.HARD, "5.1.1")  # fmt: skip
    assert record.source_id == "<6750a5e5.2c0a0220.3b1f7.9a4eGMR@mx.google.com>"


async def test_malformed_and_mismatched_reports_are_answered_and_never_applied(
    tmp_path: Path,
) -> None:
    sink = RecordingSink()
    event_id = str(uuid.uuid4())
    verp = codec.address(event_id)
    deep = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                    for i in range(200))  # fmt: skip
    async with running_inbound(bounces_config(tmp_path), sink) as (system, port):
        code, text = await send(port, verp, deep)
        assert code == 554 and "multipart" in text
        # A genuine address, and a report whose original is another email: not applied.
        code, text = await send(port, verp, sample("postfix_hard", "someone-else", verp))
        assert code == 250 and "another email" in text
        code, _ = await send(port, verp, b"Subject: hello\r\n\r\njust a note\r\n")
        assert code == 250
        extra = inbound_counts(system)
    assert sink.calls == 0
    assert extra["refused_malformed"] == 1 and extra["ignored_mismatch"] == 1
    assert extra["ignored_unrecognised"] == 1


async def test_one_recipient_per_transaction(tmp_path: Path) -> None:
    sink = RecordingSink()
    a, b = (codec.address(str(uuid.uuid4())) for _ in range(2))

    async def go(port: int) -> list[int]:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=20)
        await client.connect()
        await client.mail("")
        codes = [(await client.rcpt(a))[0]]
        try:
            await client.rcpt(b)
        except aiosmtplib.SMTPRecipientRefused as exc:
            codes.append(exc.code)
        client.close()
        return codes

    async with running_inbound(bounces_config(tmp_path), sink) as (_, port):
        assert await current_edge().run(go, port) == [250, 452]


async def test_a_flood_of_connections_is_bounded(tmp_path: Path) -> None:
    sink = RecordingSink()
    config = bounces_config(tmp_path, max_connections=3)

    async def flood(port: int) -> list[int]:
        import asyncio

        clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=20) for _ in range(6)]
        codes = []
        for client in clients:
            try:
                codes.append((await client.connect()).code)
            except aiosmtplib.SMTPConnectResponseError as exc:
                codes.append(exc.code)
        for client in clients:
            client.close()
        await asyncio.sleep(0)
        return codes

    async with running_inbound(config, sink) as (system, port):
        codes = await current_edge().run(flood, port)
        extra = inbound_counts(system)
    assert codes == [220, 220, 220, 421, 421, 421]
    assert extra["connections_refused"] == 3


async def test_another_prefix_plugs_in_without_editing_the_server(tmp_path: Path) -> None:
    class Unsubscribe:
        def __init__(self) -> None:
            self.got: list[InboundMessage] = []

        def check(self, detail: str) -> str | None:
            return None if detail.startswith("tok") else "550 5.1.1 Unknown token"

        async def deliver(self, message: InboundMessage) -> str:
            await trio.lowlevel.checkpoint()
            self.got.append(message)
            return "250 2.0.0 Unsubscribed"

    class Broken(Unsubscribe):
        def check(self, detail: str) -> str | None:
            raise RuntimeError("a bug in a handler")

    handler = Unsubscribe()
    handlers = {"unsubscribe": handler, "broken": Broken()}
    async with running_inbound(bounces_config(tmp_path), RecordingSink(), handlers) as (_, port):
        assert (await send(port, f"broken+x@{DOMAIN}", b"x"))[0] == 451
        assert await send(port, f"unsubscribe+tok123@{DOMAIN}", b"Subject: x\r\n\r\n",
                          sender="ada@example.com") == (250, "2.0.0 Unsubscribed")  # fmt: skip
        assert (await send(port, f"unsubscribe+bad@{DOMAIN}", b"x"))[0] == 550
    (message,) = handler.got
    assert (message.detail, message.mail_from) == ("tok123", "ada@example.com")


def test_the_bounce_prefix_cannot_be_taken(tmp_path: Path) -> None:
    from actors.feedback import inbound_smtp_server

    with pytest.raises(ValueError, match="bounces"):
        inbound_smtp_server(bounces_config(tmp_path), RecordingSink(), {"Bounces": object()})  # type: ignore[dict-item]


async def test_a_report_too_slow_to_read_is_deferred_and_the_loop_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from actors.feedback import inbound

    release = threading.Event()
    real = inbound.parse_report

    def stuck(raw: bytes, **kw: int) -> object:
        if b"STUCK" in raw:
            release.wait(30)  # a pathological message: the worker thread is busy with it
        return real(raw, **kw)

    monkeypatch.setattr(inbound, "parse_report", stuck)
    sink = RecordingSink()
    event_id = str(uuid.uuid4())
    verp = codec.address(event_id)
    config = bounces_config(tmp_path, parse_timeout_s=0.5)
    try:
        async with running_inbound(config, sink) as (system, port):
            async with trio.open_nursery() as nursery:
                results: list[tuple[int, str]] = []

                async def slow() -> None:
                    results.append(await send(port, verp, b"Subject: STUCK\r\n\r\nx"))

                nursery.start_soon(slow)
                # While that one is stuck, the endpoint still answers and applies others.
                code, _ = await send(port, verp, sample("postfix_hard", event_id, verp))
                assert code == 250
            assert results[0][0] == 451
            extra = inbound_counts(system)
    finally:
        release.set()
    assert extra["deferred_slow"] == 1 and len(sink.records) == 1


async def test_a_flood_of_reports_is_applied_without_loss(tmp_path: Path) -> None:
    sink = RecordingSink()
    ids = [str(uuid.uuid4()) for _ in range(60)]
    names = ["postfix_hard", "gmail_soft", "exim_hard", "arf_yahoo", "vacation"]
    async with running_inbound(bounces_config(tmp_path), sink) as (system, port):
        codes: list[int] = []

        async def worker(batch: list[str]) -> None:
            for i, event_id in enumerate(batch):
                verp = codec.address(event_id)
                name = names[i % len(names)]
                codes.append((await send(port, verp, sample(name, event_id, verp)))[0])

        async with trio.open_nursery() as nursery:
            for k in range(6):
                nursery.start_soon(worker, ids[k::6])
        extra = inbound_counts(system)
    assert codes == [250] * 60
    applied = {r.event_id for r in sink.records}
    assert len(sink.records) == len(applied) == 60 - extra["ignored_auto-reply"]
    assert extra["messages"] == 60


async def test_the_counters_are_prometheus_metrics(tmp_path: Path) -> None:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.registry import CollectorRegistry

    from actors.telemetry.metrics import Observation, families
    from runtime import GateStatistics

    event_id = str(uuid.uuid4())
    async with running_inbound(bounces_config(tmp_path), RecordingSink()) as (system, port):
        verp = codec.address(event_id)
        await send(port, verp, sample("postfix_hard", event_id, verp))
        await send(port, f"bounces+{event_id}.aaaaaaaaaaaaaaaa@{DOMAIN}", b"x")
        obs = Observation(system.snapshot(), GateStatistics(False, None, 0, 0), None, None)

    class One:
        def collect(self) -> object:
            return families("feedback", obs)

    registry = CollectorRegistry()
    registry.register(One())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    samples = {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "mailactors_inbound_smtp"
        for s in family.samples
    }
    assert samples["feedback_bounce"] == 1 and samples["rcpt_forged"] == 1


async def test_the_endpoint_stops_with_connections_still_open(tmp_path: Path) -> None:
    clients: list[aiosmtplib.SMTP] = []

    async def connect(port: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=20)
        await client.connect()
        await client.mail("")
        clients.append(client)

    t0 = trio.current_time()
    async with running_inbound(bounces_config(tmp_path), RecordingSink()) as (system, port):
        for _ in range(3):
            await current_edge().run(connect, port)
        assert system.snapshot().by_path()["inbound-smtp"].extra["connections_open"] == 3
    assert trio.current_time() - t0 < 5  # the sessions were closed, not waited for
    for client in clients:
        client.close()
