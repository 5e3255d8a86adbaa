"""The due-scanner's timing under MockClock: it publishes a scheduled email when it is due (not
before), woken early by a Wake, bounded by its interval, looking again for a store that shows
new documents late, and retrying after a store outage. (End to end, with a real process killed
while emails wait: tests/system/test_scheduled_restart.py and test_api_distributed.py.)"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing

from actors.domain.edges import (
    ApplyOutcome,
    ApplyResult,
    BusUnavailable,
    StoreUnavailable,
    apply_status,
)
from actors.domain.schema import EmailDocument, EmailSendEvent, EmailStatusEvent, Status
from actors.integration.scheduler import ScanNow, ScheduledSender, Wake
from runtime import ActorSystem, ChildSpec, SupervisorSpec

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
pytestmark = pytest.mark.trio


def wall() -> datetime:
    """Wall time that follows Trio's (mock) clock."""
    return EPOCH + timedelta(seconds=trio.current_time())


def at(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


class Store:
    """SCHEDULED documents; each visible to the scan ``lag`` seconds after it was added."""

    def __init__(self, lag: float = 0.0, outages: int = 0) -> None:
        self.docs: dict[str, EmailDocument] = {}
        self.visible: dict[str, float] = {}
        self.lag = lag
        self.outages = outages

    def add(self, event_id: str, send_at: datetime) -> EmailDocument:
        doc = EmailDocument(
            event_id=event_id, recipient="a@example.com", template="welcome",
            status=Status.SCHEDULED, send_at=send_at,
        )
        self.docs[event_id] = doc
        self.visible[event_id] = trio.current_time() + self.lag
        return doc

    async def scheduled_before(self, before: datetime, limit: int) -> list[EmailDocument]:
        await trio.lowlevel.checkpoint()
        if self.outages:
            self.outages -= 1
            raise StoreUnavailable("down")
        now = trio.current_time()
        found = [
            d for d in self.docs.values()
            if d.status is Status.SCHEDULED and d.send_at is not None and d.send_at < before
            and self.visible[d.event_id] <= now
        ]
        return sorted(found, key=lambda d: (d.send_at, d.event_id))[:limit]

    async def apply_status_many(self, events: Sequence[EmailStatusEvent]) -> list[ApplyResult]:
        await trio.lowlevel.checkpoint()
        results = []
        for event in events:
            new = apply_status(self.docs[event.event_id], event)
            if new is None:
                results.append(ApplyResult(event.event_id, ApplyOutcome.IGNORED))
            else:
                self.docs[event.event_id] = new
                results.append(ApplyResult(event.event_id, ApplyOutcome.APPLIED, new.status))
        return results


class Bus:
    def __init__(self, refusals: int = 0) -> None:
        self.published: list[tuple[float, EmailSendEvent]] = []
        self.refusals = refusals

    async def publish_send(self, event: EmailSendEvent) -> None:
        await trio.lowlevel.checkpoint()
        if self.refusals:
            self.refusals -= 1
            raise BusUnavailable("broker down")
        self.published.append((trio.current_time(), event))


async def spawn(system: ActorSystem, store: Store, bus: Bus, interval_s: float) -> Any:
    spec = ChildSpec(
        "scheduler", ScheduledSender, args=(store, bus, interval_s), kwargs={"wall": wall}
    )
    await system.spawn(SupervisorSpec("integration", [spec]))
    return system.lookup("integration/scheduler")


async def test_due_emails_wait_for_their_time_and_a_wake_cuts_the_sleep(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    store, bus = Store(), Bus()
    store.add("known", at(100))  # in the store at start: its time bounds the first sleep
    ref = await spawn(actor_system, store, bus, 3600)
    await trio.sleep(5)
    store.add("woken", at(20))
    ref.send_nowait(Wake(at(20)))
    store.add("silent", at(30))  # no Wake, but the scan at 20 sees it: sent at its time
    await trio.sleep(200)
    when = {event.event_id: t for t, event in bus.published}
    assert 20 <= when["woken"] < 20.01
    assert 100 <= when["known"] < 100.01
    assert 30 <= when["silent"] < 30.01
    assert all(store.docs[i].status is Status.PENDING for i in when)
    store.add("late", at(1000))  # no Wake, nothing sooner: the interval bounds the sleep
    await trio.sleep(4000)
    assert [e.event_id for _, e in bus.published][-1] == "late"
    assert 3700 <= bus.published[-1][0] < 3700.01  # the scan an interval after the one at 100


async def test_a_store_that_shows_a_new_email_late_is_looked_at_again(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    store, bus = Store(lag=1.0), Bus()
    ref = await spawn(actor_system, store, bus, 3600)
    await trio.sleep(1)
    store.add("e1", at(1.5))  # due before the store shows it (at 2.0)
    ref.send_nowait(Wake(at(1.5)))
    await trio.sleep(10)
    ((t, event),) = bus.published
    assert event.event_id == "e1" and 3.0 <= t < 3.01  # the look 1.5 s after it was due


async def test_a_cancelled_email_is_never_published_and_an_outage_is_retried(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    store, bus = Store(outages=1), Bus()
    store.add("kept", at(0))
    doomed = store.add("doomed", at(0))
    cancel = EmailStatusEvent(event_id=doomed.event_id, status=Status.CANCELLED, attempt=0)
    await store.apply_status_many([cancel])
    ref = await spawn(actor_system, store, bus, 3600)
    await trio.sleep(5)
    assert [e.event_id for _, e in bus.published] == ["kept"]
    assert 1.0 <= bus.published[0][0] < 1.01  # after the outage, retried in a second
    report = await ref.ask(ScanNow(), timeout=5)
    assert report.published == 0 and report.error is None
    assert store.docs["doomed"].status is Status.CANCELLED


async def test_an_email_moved_to_pending_is_published_once_the_bus_takes_it(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    store, bus = Store(), Bus(refusals=2)
    store.add("a", at(0))
    store.add("b", at(0))
    await spawn(actor_system, store, bus, 3600)
    await trio.sleep(5)
    # Both left SCHEDULED for PENDING in one go; the bus refused the first publish, and the
    # retry of the scan a second later refused it again: published at the one after.
    assert sorted(e.event_id for _, e in bus.published) == ["a", "b"]
    assert all(2.0 <= t < 2.01 for t, _ in bus.published)
    assert {d.status for d in store.docs.values()} == {Status.PENDING}
