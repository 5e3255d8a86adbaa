"""The outbox sweeper: its schedule under MockClock, then for real in the embedded
profile (SQLite, real SMTP): a document saved and never published ("auth crashed
between save and publish"), and a process that stopped while a retry waited in
memory, both end SENT, once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing

from actors.domain.edges import SearchPage, SearchQuery
from actors.domain.schema import EmailDocument, EmailSendEvent, EmailStatusEvent, Status
from actors.integration.sweeper import OutboxSweeper, SweeperSettings, SweepNow
from runtime import ActorSystem, ChildSpec, SupervisorSpec
from tests.support.checks import max_in_any_window, received_ids
from tests.support.embedded import FlakyServer, embedded_config, request, running
from tests.support.smtp_servers import CapturingServer

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


def wall() -> datetime:
    """Document time that follows Trio's (mock) clock."""
    return EPOCH + timedelta(seconds=trio.current_time())


def doc(i: int, created: datetime, status: Status = Status.PENDING, **kw: Any) -> EmailDocument:
    return EmailDocument(
        event_id=f"e{i}",
        recipient=f"u{i}@example.com",
        template="welcome",
        status=status,
        created_at=created,
        updated_at=kw.pop("updated_at", created),
        **kw,
    )


class FakeStore:
    """Documents in a dict; a published event moves its document to SENT (as delivery would)."""

    def __init__(self, docs: Sequence[EmailDocument]) -> None:
        self.docs = {d.event_id: d for d in docs}

    async def pending_older_than(self, before: datetime, limit: int) -> list[EmailDocument]:
        await trio.lowlevel.checkpoint()
        old = [
            d for d in self.docs.values() if d.status is Status.PENDING and d.created_at < before
        ]
        return sorted(old, key=lambda d: (d.created_at, d.event_id))[:limit]

    async def search(self, query: SearchQuery) -> SearchPage:
        await trio.lowlevel.checkpoint()
        found = [d for d in self.docs.values() if d.status is query.status]
        return SearchPage(found, "", len(found))


class FakeBus:
    def __init__(self, store: FakeStore, durable: bool) -> None:
        self.store = store
        self.durable_delay = durable
        self.published: list[tuple[float, EmailSendEvent]] = []

    async def publish_send(self, event: EmailSendEvent) -> None:
        await trio.lowlevel.checkpoint()
        self.published.append((trio.current_time(), event))
        self.store.docs[event.event_id].status = Status.SENT


async def spawn_sweeper(
    system: ActorSystem, store: FakeStore, bus: FakeBus, settings: SweeperSettings
) -> Any:
    spec = ChildSpec("sweeper", OutboxSweeper, args=(store, bus, settings), kwargs={"wall": wall})
    await system.spawn(SupervisorSpec("integration", [spec]))
    return system.lookup("integration/sweeper")


async def test_pending_documents_are_republished_at_the_rate_and_on_schedule(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    t0 = trio.current_time()
    old = [doc(i, EPOCH - timedelta(seconds=400)) for i in range(400)]
    young = [doc(1000 + i, EPOCH + timedelta(seconds=10)) for i in range(5)]
    young_ids = {d.event_id for d in young}
    store = FakeStore([*old, *young])
    bus = FakeBus(store, durable=True)
    settings = SweeperSettings(pending_age_s=300, rate=10, interval_s=30)
    await spawn_sweeper(actor_system, store, bus, settings)
    await trio.sleep(400)
    times = [t - t0 for t, _ in bus.published]
    ids = [e.event_id for _, e in bus.published]
    assert Counter(ids).most_common(1)[0][1] == 1 and len(ids) == 405
    assert max_in_any_window(times) <= 10  # never above sweeper.rate
    # one sweep takes at most rate * interval = 300 (30 s), the next 30 s after it
    assert times[299] < 30 and 59.5 <= times[300] < 61
    # the young ones are re-published by the first sweep after they are 300 s old
    young_times = [t - t0 for t, e in bus.published if e.event_id in young_ids]
    assert all(t >= 310 for t in young_times) and min(young_times) < 310 + 30 + 1
    assert all(e.attempt == 1 for _, e in bus.published)


async def test_distributed_sweeps_only_pending(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    long_ago = EPOCH - timedelta(hours=1)
    store = FakeStore(
        [
            doc(1, long_ago, Status.SENDING, attempts=1),
            doc(2, long_ago, Status.RETRYING, attempts=1, next_attempt_at=long_ago),
        ]
    )
    bus = FakeBus(store, durable=True)  # the broker holds those
    sweeper = await spawn_sweeper(actor_system, store, bus, SweeperSettings(interval_s=1))
    report = await sweeper.ask(SweepNow())
    assert report.total == 0 and bus.published == []


async def test_embedded_sweeps_orphans_at_start_and_stuck_ones_later(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    t0 = trio.current_time()
    start = wall()
    before = start - timedelta(seconds=5)  # stamped before this process started
    store = FakeStore(
        [
            doc(1, before),  # PENDING, young, but no process carries it any more
            doc(2, before, Status.SENDING, attempts=2),
            doc(
                3, before, Status.RETRYING, attempts=1, next_attempt_at=start - timedelta(seconds=1)
            ),
            doc(
                4,
                before,
                Status.RETRYING,
                attempts=1,
                next_attempt_at=start + timedelta(seconds=100),
            ),
        ]
    )
    bus = FakeBus(store, durable=False)
    settings = SweeperSettings(pending_age_s=300, rate=100, interval_s=10, stuck_grace_s=60)
    await spawn_sweeper(actor_system, store, bus, settings)
    await trio.sleep(1)
    first = {e.event_id: e.attempt for _, e in bus.published}
    # at once: the orphans; SENDING again as the same attempt, RETRYING as the next
    assert first == {"e1": 1, "e2": 2, "e3": 2}
    await trio.sleep(150)  # e4, an orphan too, goes by the first sweep once it is due
    t4 = [t - t0 for t, e in bus.published if e.event_id == "e4"]
    assert len(t4) == 1 and 100 <= t4[0] <= 111
    # stamped after the start (a live retry or send may still carry them): only once
    # they are stuck_grace_s overdue (RETRYING) or silent (SENDING)
    t1 = trio.current_time() - t0
    store.docs["e5"] = doc(5, wall(), Status.SENDING, attempts=1)
    store.docs["e6"] = doc(
        6, wall(), Status.RETRYING, attempts=1, next_attempt_at=wall() + timedelta(seconds=10)
    )
    await trio.sleep(200)
    late = {e.event_id: t - t0 - t1 for t, e in bus.published if e.event_id in ("e5", "e6")}
    assert 60 <= late["e5"] <= 71 and 70 <= late["e6"] <= 81


async def test_a_store_outage_skips_a_sweep_and_the_next_one_works(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    from actors.domain.edges import StoreUnavailable

    class Flaky(FakeStore):
        fail = True

        async def pending_older_than(self, before: datetime, limit: int) -> list[EmailDocument]:
            if self.fail:
                self.fail = False
                raise StoreUnavailable("down")
            return await super().pending_older_than(before, limit)

    store = Flaky([doc(1, EPOCH - timedelta(hours=1))])
    bus = FakeBus(store, durable=True)
    sweeper = await spawn_sweeper(actor_system, store, bus, SweeperSettings(interval_s=5))
    await trio.sleep(1)
    assert bus.published == []
    await trio.sleep(5)
    assert [e.event_id for _, e in bus.published] == ["e1"]
    extra = actor_system.snapshot().by_path()["integration/sweeper"].extra or {}
    assert extra["sweeps"] == 2 and extra["last_error"] is None
    assert (await sweeper.ask(SweepNow())).total == 0


# -- for real: embedded profile, SQLite store, real SMTP ---------------------------------


async def test_saved_but_never_published_is_swept_and_sent_once(tmp_path):
    """auth "crashed" between save and publish: the document is saved, no event exists."""
    async with CapturingServer() as smtp:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            sweeper={"pending_age_s": 1.0, "interval_s": 0.5},
        )
        async with running(config) as app:
            orphan = EmailDocument(
                event_id="orphan-1",
                recipient="ada@example.com",
                template="welcome",
                variables={"name": "Ada", "product": "Acme"},
            )
            saved = await app.api.save(orphan)  # straight to integration: nothing published
            assert saved.created and saved.document.status is Status.PENDING
            done = await app.wait_terminal("orphan-1", timeout=20)
            sweeper = app.system.snapshot().by_path()["integration/sweeper"].extra or {}
    assert done.status is Status.SENT and done.attempts == 1
    assert sweeper["republished"]["pending"] >= 1
    assert received_ids(smtp) == {"orphan-1": 1}


async def test_a_retry_waiting_in_memory_survives_a_restart(tmp_path):
    """Embedded: the process stops while a retry waits in memory; the next one sends it."""
    async with FlakyServer(1, "451 4.3.0 Try again later") as smtp:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            retry={"base_delay_s": 1.5, "max_delay_s": 1.5, "jitter": 0.0},
            sweeper={"interval_s": 0.5},
        )
        async with running(config) as app:
            accepted = await app.request(request(to="flaky@example.com"))
            with trio.fail_after(10):
                while True:
                    doc_ = await app.store.get(accepted.event_id)
                    if doc_ is not None and doc_.status is Status.RETRYING:
                        break
                    await trio.sleep(0.05)
        # stopped: the Retrier's wait died with it; the document says when it was due
        assert doc_.next_attempt_at is not None
        assert doc_.next_attempt_at - doc_.updated_at == pytest.approx(
            timedelta(seconds=1.5), abs=timedelta(seconds=0.1)
        )
        assert smtp.messages() == []
        async with running(config) as app:
            done = await app.wait_terminal(accepted.event_id, timeout=20)
            sent_at = datetime.now(UTC)
    assert done.status is Status.SENT and done.attempts == 2
    assert [(h.attempt, h.status) for h in done.history] == [(1, Status.RETRYING), (2, Status.SENT)]
    first, second = done.history  # every attempt: its number, time, SMTP code and reply
    assert (first.smtp_code, first.reply) == (451, "4.3.0 Try again later")
    assert (second.smtp_code, second.provider) == (250, "smtp") and "queued as" in (
        second.reply or ""
    )
    assert first.at < second.at
    assert sent_at >= doc_.next_attempt_at  # not before it was due
    assert done.next_attempt_at is None
    assert received_ids(smtp) == {accepted.event_id: 1}


async def test_pending_left_by_a_stopped_process_is_sent_at_the_next_start(tmp_path):
    config = embedded_config(tmp_path, sweeper={"enabled": False})
    async with running(config) as app:
        await app.api.save(
            EmailDocument(event_id="left-1", recipient="bo@example.com", template="welcome",
                          variables={"name": "Bo", "product": "Acme"})
        )
    # pending_age_s is 300 s, but nothing in this new process carries it: sent at once
    config = embedded_config(tmp_path)
    async with running(config) as app:
        done = await app.wait_terminal("left-1", timeout=20)
    assert done.status is Status.SENT


async def test_late_and_repeated_status_events_do_not_move_a_sent_email(tmp_path):
    """End to end: PENDING -> SENDING -> SENT, then stale events on the bus change nothing."""
    config = embedded_config(tmp_path, email_server={"report_sending": True})
    async with running(config) as app:
        accepted = await app.request(request())
        done = await app.wait_terminal(accepted.event_id)
        updater = app.system.snapshot().by_path()["integration/updater"].extra or {}
        assert updater["outcomes"]["applied"] >= 2  # SENDING, then SENT
        stale = [
            EmailStatusEvent(event_id=accepted.event_id, status=Status.SENDING, attempt=1),
            EmailStatusEvent(
                event_id=accepted.event_id, status=Status.RETRYING, attempt=1, error="x"
            ),
            EmailStatusEvent(
                event_id=accepted.event_id, status=Status.FAILED, attempt=1, error="x"
            ),
            EmailStatusEvent(event_id=accepted.event_id, status=Status.SENT, attempt=1),
        ]
        for event in stale:
            await app.bus.publish_status(event)
        with trio.fail_after(10):
            while True:
                now = app.system.snapshot().by_path()["integration/updater"].extra or {}
                if now["outcomes"]["ignored"] >= updater["outcomes"]["ignored"] + len(stale):
                    break
                await trio.sleep(0.02)
        after = await app.store.get(accepted.event_id)
    assert after == done
    assert after is not None and after.status is Status.SENT and len(after.history) == 1
