"""Never sent twice, in one process: the claims as the email server uses them.

Two email-server trees in one actor system, each with its own bus and its own
claims store over one shared record, stand for two workers; owners are named
as if on another machine, so only leases say whether they are alive, and
leases run on a fake wall clock. Processes, RabbitMQ and Elasticsearch come in
``test_exactly_once_processes.py``.
"""

from __future__ import annotations

import collections
import logging
import os
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from actors.auth import faults
from actors.auth.service import RequestEmail, auth_tree
from actors.bus.memory import MemoryBus
from actors.domain.edges import OutgoingEmail, SaveResult, SendResult
from actors.domain.schema import (
    EmailDocument,
    EmailSendEvent,
    EmailStatusEvent,
    Status,
    status_event_decoder,
)
from actors.domain.templates import TemplateRenderer
from actors.email_server.safeguards import SendGuards
from actors.email_server.service import SenderSettings, email_server_tree
from actors.profiles.embedded import open_embedded
from actors.providers.maildir import MaildirProvider
from actors.stores.claims import UNKNOWN_OUTCOME_REASON
from actors.stores.claims_sqlite import SqliteClaims
from actors.telemetry.metrics import EmailMetrics
from config import LimitsConfig
from runtime import ActorSystem, open_actor_system
from tests.support.embedded import embedded_config

ROOT = Path(__file__).resolve().parent.parent.parent


class FakeWall:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingProvider:
    """Accepts everything, after a short random pause; counts each eventId it was handed."""

    name = "counting"

    def __init__(self, pause: float = 0.002, batch_sends: int = 1) -> None:
        self.sent: collections.Counter[str] = collections.Counter()
        self.pause = pause
        self.batch_sends = batch_sends  # > 1: senders claim and send in batches (as Maildir)
        self.sending = 0
        self.most_at_once = 0

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, email: OutgoingEmail) -> SendResult:
        self.sending += 1
        self.most_at_once = max(self.most_at_once, self.sending)
        try:
            await trio.sleep(random.uniform(0, self.pause))
        finally:
            self.sending -= 1
        self.sent[email.event_id] += 1
        return SendResult(provider=self.name, ok=True, code=250, reply="2.0.0 Ok")


def send_event(event_id: str) -> EmailSendEvent:
    return EmailSendEvent(
        event_id=event_id,
        recipient=f"{event_id}@example.com",
        template="welcome",
        variables={"name": "Ada", "product": "Acme"},
    )


class Worker:
    """One email-server tree with its own bus and its own view of the shared claims."""

    def __init__(self, name: str, claims: SqliteClaims, provider: Any, **settings: Any) -> None:
        self.name = name
        self.bus = MemoryBus(4096)
        self.claims = claims
        self.provider = provider
        self.guards = SendGuards()
        self.settings = SenderSettings(
            root=name, sender="me@x.org", message_id_domain="x.org", claim_recheck_s=0.2, **settings
        )
        self.statuses: list[EmailStatusEvent] = []

    async def start(self, system: ActorSystem, nursery: trio.Nursery) -> None:
        renderer = TemplateRenderer(ROOT / "templates")
        await system.spawn(
            email_server_tree(
                self.bus, self.provider, renderer, self.settings, concurrency=4,
                claims=self.claims, name=self.name, guards=self.guards,
            )
        )
        nursery.start_soon(self._collect)

    async def _collect(self) -> None:
        while True:
            delivery = await self.bus.next_status()
            self.statuses.append(status_event_decoder.decode(delivery.body))
            await delivery.ack()


def _remote(name: str) -> str:
    return f"{name}.elsewhere~0/1/{name}"


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll: actors' counters are what is observed here, and they have no event to wait on."""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.005)


@pytest.mark.parametrize("batch_sends", [1, 8], ids=["one-by-one", "in-batches"])
async def test_copies_racing_on_two_workers_are_sent_once(tmp_path: Path, batch_sends: int) -> None:
    provider = CountingProvider(batch_sends=batch_sends)
    path = tmp_path / "sent.sqlite3"
    async with (
        SqliteClaims(path, _remote("a")) as ca,
        SqliteClaims(path, _remote("b")) as cb,
        open_actor_system("t", shutdown=10) as system,
        trio.open_nursery() as nursery,
    ):
        a, b = Worker("es-a", ca, provider), Worker("es-b", cb, provider)
        for w in (a, b):
            await w.start(system, nursery)
        ids = [f"ev-{i}" for i in range(150)]
        for event_id in ids:  # each published to both workers at once
            await a.bus.publish_send(send_event(event_id))
            await b.bus.publish_send(send_event(event_id))
        # every copy is settled with a status: the sender's, or the recorded one again
        await wait_until(lambda: len(a.statuses) + len(b.statuses) == 2 * len(ids))
        nursery.cancel_scope.cancel()
    assert provider.sent == {e: 1 for e in ids}
    # 4 senders per worker: more than 8 sends at once means senders sent batches
    assert (provider.most_at_once > 8) == (batch_sends > 1)
    statuses = a.statuses + b.statuses
    assert {s.status for s in statuses} == {Status.SENT}
    assert collections.Counter(s.event_id for s in statuses) == {e: 2 for e in ids}
    # the window from acceptance to a durable outcome was measured for every email
    assert a.guards.window.count + b.guards.window.count == len(ids)


class _Died(Exception):
    """Stands for a process killed right after the provider accepted (faults.after_accept)."""


@pytest.mark.parametrize("policy", ["fail", "resend", "maildir"])
async def test_a_dead_owners_claim_is_taken_over_after_its_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    wall = FakeWall()
    path = tmp_path / "sent.sqlite3"
    provider: Any = CountingProvider()
    if policy == "maildir":
        provider = MaildirProvider(tmp_path / "maildir")
        await provider.open()
    died = [False]

    def die_once() -> None:
        if not died[0]:
            died[0] = True
            raise _Died("killed between acceptance and the record")

    monkeypatch.setattr(faults, "after_accept", die_once)
    outcome = "resend" if policy == "maildir" else policy
    async with (
        SqliteClaims(path, _remote("a"), clock=wall) as ca,
        SqliteClaims(path, _remote("b"), clock=wall) as cb,
        open_actor_system("t", shutdown=10) as system,
        trio.open_nursery() as nursery,
    ):
        a = Worker(
            "es-a",
            ca,
            provider,
            claim_lease_s=30.0,
            unknown_outcome_by_category={"transactional": outcome},
        )
        b = Worker(
            "es-b",
            cb,
            provider,
            claim_lease_s=30.0,
            unknown_outcome_by_category={"transactional": outcome},
        )
        for w in (a, b):
            await w.start(system, nursery)
        await a.bus.publish_send(send_event("ev-1"))
        await wait_until(lambda: died[0] and len(a.bus.dead_letters) == 1)
        # the broker hands the unsettled copy to the other worker: a live lease holds it off
        await b.bus.publish_send(send_event("ev-1"))
        await wait_until(lambda: b.guards.held >= 2)
        assert not b.statuses
        wall.now += 31.0  # the lease runs out: b takes the claim over
        await wait_until(lambda: len(b.statuses) == 1)
        nursery.cancel_scope.cancel()
    [status] = b.statuses
    assert b.guards.takeovers == 1
    if policy == "fail":
        assert status.status is Status.FAILED and status.error == UNKNOWN_OUTCOME_REASON
        assert provider.sent == {"ev-1": 1}  # never a second copy
    elif policy == "resend":
        assert status.status is Status.SENT and b.guards.unknown_resent == 1
        assert provider.sent == {"ev-1": 2}  # the one duplicate the policy allows, and counted
    else:
        assert status.status is Status.SENT and b.guards.found_sent == 1
        assert len(list((tmp_path / "maildir" / "new").iterdir())) == 1  # the provider knew
        await provider.close()


# -- auth: what it saved, it publishes ---------------------------------------------------------


class SlowIntegration:
    """Saves at once, answers after ``release`` (a gRPC reply on its way back)."""

    def __init__(self) -> None:
        self.saved: dict[str, EmailDocument] = {}
        self.release = trio.Event()

    async def save(self, document: EmailDocument) -> SaveResult:
        if document.event_id in self.saved:
            return SaveResult(self.saved[document.event_id], created=False)
        self.saved[document.event_id] = document
        await self.release.wait()
        return SaveResult(document, created=True)


async def _published(bus: MemoryBus) -> list[str]:
    out = []
    while True:
        try:
            body, _ = bus._send[1].receive_nowait()  # noqa: SLF001
        except trio.WouldBlock:
            return out
        out.append(msgspec.json.decode(body)["eventId"])


async def test_a_graceful_stop_publishes_what_auth_saved(
    autojump_clock: trio.testing.MockClock,
) -> None:
    integration = SlowIntegration()
    bus = MemoryBus(100)
    renderer = TemplateRenderer(ROOT / "templates")
    async with open_actor_system("t", shutdown=30) as system, trio.open_nursery() as nursery:
        await system.spawn(auth_tree(integration, bus, renderer, LimitsConfig()))
        ref = system.lookup("auth/requests")

        async def ask(i: int) -> None:
            req = RequestEmail(
                recipient=f"u{i}@example.com", template="welcome",
                variables={"name": "Ada", "product": "Acme"}, idempotency_key=f"k{i}",
            )
            await ref.ask(req, timeout=60)

        for i in range(14):
            nursery.start_soon(ask, i)
        await wait_until(lambda: len(integration.saved) == 14)
        system.request_stop()  # Ctrl-C while the 14 saves are answered
        await trio.sleep(1.0)
        integration.release.set()
        await system.wait_stopped()
    assert sorted(await _published(bus)) == sorted(d.event_id for d in integration.saved.values())


async def test_a_repeated_key_republishes_an_email_still_pending() -> None:
    bus = MemoryBus(100)
    renderer = TemplateRenderer(ROOT / "templates")
    integration = SlowIntegration()
    integration.release.set()
    async with open_actor_system("t", shutdown=5) as system:
        await system.spawn(
            auth_tree(integration, bus, renderer, LimitsConfig(), pending_repeat_s=10.0)
        )
        ref = system.lookup("auth/requests")

        def req(key: str) -> RequestEmail:
            return RequestEmail(
                recipient="ada@example.com", template="welcome",
                variables={"name": "Ada", "product": "Acme"}, idempotency_key=key,
            )

        first = await ref.ask(req("old"), timeout=10)
        await ref.ask(req("fresh"), timeout=10)
        assert len(await _published(bus)) == 2
        # "old" was saved long ago and is still PENDING: its send event may never have gone out
        doc = integration.saved[first.event_id]
        integration.saved[first.event_id] = msgspec.structs.replace(
            doc, created_at=datetime.now(UTC) - timedelta(seconds=60)
        )
        again = await ref.ask(req("old"), timeout=10)
        fresh = await ref.ask(req("fresh"), timeout=10)
        assert again.duplicate and fresh.duplicate
        assert await _published(bus) == [first.event_id]  # the fresh one is on its way already
        system.request_stop()


# -- integration: nothing dropped silently -------------------------------------------------------


async def test_a_status_for_an_unknown_email_is_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = embedded_config(tmp_path)
    metrics = EmailMetrics()
    caplog.set_level(logging.INFO, logger="mailactors.integration")
    async with open_embedded(config, grpc=False, shutdown=10, metrics=metrics) as app:
        orphan = EmailStatusEvent(
            event_id="no-such-email-1", status=Status.SENT, attempt=1,
            requested_at=datetime.now(UTC), provider="smtp",
        )
        await app.bus.publish_status(orphan)

        def counted() -> float:
            return float(metrics.not_applied.labels("unknown_email")._value.get())  # noqa: SLF001

        await wait_until(lambda: counted() == 1.0)
        report = app.system.snapshot().by_path()["integration/updater"].extra
        assert report is not None and report["unknown_emails"] == ["no-such-email-1"]
        assert report["outcomes"]["not_found"] == 1
    lines = [r for r in caplog.records if getattr(r, "event_id", None) == "no-such-email-1"]
    assert lines and "no email with this eventId" in lines[0].getMessage()
    assert lines[0].levelno == logging.WARNING


@pytest.mark.parametrize("batch_sends", [1, 16], ids=["one-by-one", "in-batches"])
async def test_in_a_batch_an_email_that_crashes_its_sender_fails_alone(
    tmp_path: Path, batch_sends: int
) -> None:
    """A provider bug on one email of a batch: that email's delivery is handed back (dead-
    lettered on the in-process bus, with the error), every other email of the batch is sent
    and reported, and the sender is restarted."""

    class Buggy(CountingProvider):
        async def send(self, email: OutgoingEmail) -> SendResult:
            if email.event_id == "ev-13":
                raise RuntimeError("a bug in the provider")
            return await super().send(email)

    provider = Buggy(batch_sends=batch_sends)
    async with (
        SqliteClaims(tmp_path / "sent.sqlite3", _remote("a")) as claims,
        open_actor_system("t", shutdown=10) as system,
        trio.open_nursery() as nursery,
    ):
        worker = Worker("es-a", claims, provider)
        await worker.start(system, nursery)
        ids = [f"ev-{i}" for i in range(40)]
        for event_id in ids:
            await worker.bus.publish_send(send_event(event_id))
        await wait_until(lambda: len(worker.statuses) == len(ids) - 1)
        await wait_until(lambda: len(worker.bus.dead_letters) == 1)
        nursery.cancel_scope.cancel()
    assert (provider.most_at_once > 4) == (batch_sends > 1)  # > 4 senders' one each: batches
    assert {s.event_id for s in worker.statuses} == set(ids) - {"ev-13"}
    assert {s.status for s in worker.statuses} == {Status.SENT}
    assert provider.sent == {e: 1 for e in ids if e != "ev-13"}
    [(queue, _body, reason)] = worker.bus.dead_letters
    assert queue == "send" and "a bug in the provider" in reason


async def test_copies_racing_on_two_workers_sending_to_one_maildir_in_batches(
    tmp_path: Path,
) -> None:
    """Maildir's batches (send_many: one write per sender turn) under the same race."""
    provider = MaildirProvider(tmp_path / "maildir")
    await provider.open()
    path = tmp_path / "sent.sqlite3"
    async with (
        SqliteClaims(path, _remote("a")) as ca,
        SqliteClaims(path, _remote("b")) as cb,
        open_actor_system("t", shutdown=10) as system,
        trio.open_nursery() as nursery,
    ):
        a, b = Worker("es-a", ca, provider), Worker("es-b", cb, provider)
        for w in (a, b):
            await w.start(system, nursery)
        ids = [f"ev-{i}" for i in range(300)]
        for event_id in ids:
            await a.bus.publish_send(send_event(event_id))
            await b.bus.publish_send(send_event(event_id))
        await wait_until(lambda: len(a.statuses) + len(b.statuses) == 2 * len(ids))
        nursery.cancel_scope.cancel()
    await provider.close()
    written = collections.Counter(
        name.split(",")[1] for name in os.listdir(tmp_path / "maildir" / "new")
    )
    assert written == {e: 1 for e in ids}
    stats = provider.statistics()
    assert stats.sent == len(ids) and stats.batches < len(ids) / 4  # written in batches
