"""The claim stores (``actors.stores.claims``): SQLite and Elasticsearch, one contract.

Two stores with different owners stand for two workers (on two machines, for
Elasticsearch). Leases run on a fake wall clock.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.domain.schema import EmailStatusEvent, Status
from actors.stores.claims import Claim, ClaimDecision, ClaimStore, Settle, new_owner, owner_dead
from actors.stores.claims_elasticsearch import ElasticsearchClaims
from actors.stores.claims_sqlite import SqliteClaims


class FakeWall:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def sent(event_id: str) -> EmailStatusEvent:
    return EmailStatusEvent(
        event_id=event_id,
        status=Status.SENT,
        attempt=1,
        requested_at=datetime(2026, 1, 1, tzinfo=UTC),
        provider="smtp",
        smtp_code=250,
    )


Pair = tuple[ClaimStore, ClaimStore]


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.services)])
async def open_pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Opens two stores over one shared record: ``async with open_pair(wall, owners) as (a, b)``."""
    kind = request.param
    url = request.getfixturevalue("elasticsearch_url") if kind == "elasticsearch" else ""
    index = f"test-claims-{id(request)}-{tmp_path.name}".lower()
    opened: list[Any] = []

    def make(wall: FakeWall, owner: str) -> Any:
        if kind == "sqlite":
            return SqliteClaims(tmp_path / "sent.sqlite3", owner, clock=wall)
        return ElasticsearchClaims(url, index, owner=owner, clock=wall)

    class _Pair:
        def __init__(self, wall: FakeWall, owners: tuple[str, str]) -> None:
            self.stores = [make(wall, o) for o in owners]

        async def __aenter__(self) -> tuple[Any, Any]:
            for s in self.stores:
                await s.open()
                opened.append(s)
            return self.stores[0], self.stores[1]

        async def __aexit__(self, *exc: object) -> None:
            for s in self.stores:
                await s.close()

    yield _Pair
    if kind == "elasticsearch" and opened:
        await opened[0].open()
        await opened[0].delete_index()
        await opened[0].close()


def _remote_owner(name: str) -> str:
    """An owner on another machine: only its lease says whether it is alive."""
    return f"{name}.elsewhere~0/1/{name}"


async def test_one_winner_then_the_outcome(open_pair: Any) -> None:
    wall = FakeWall()
    async with open_pair(wall, (_remote_owner("a"), _remote_owner("b"))) as (a, b):
        ids = [f"ev-{i}" for i in range(20)]
        won = await a.claim_many(ids, 60.0)
        assert [c.decision for c in won] == [ClaimDecision.SEND] * 20
        held = await b.claim_many(ids, 60.0)
        assert {c.decision for c in held} == {ClaimDecision.HELD}
        assert all(c.owner == a.owner and 59 < c.lease_left_s <= 60 for c in held)
        # The owner records outcomes: a later copy gets them, and sends nothing.
        assert await a.settle_many([Settle(c, sent(c.event_id)) for c in won]) == [True] * 20
        again = await b.claim_many(ids, 60.0)
        assert [c.decision for c in again] == [ClaimDecision.OUTCOME] * 20
        assert again[3].outcome is not None and again[3].outcome.event_id == "ev-3"
        stored = await b.outcome("ev-3")
        assert stored is not None and (stored.event_id, stored.status) == ("ev-3", Status.SENT)
        assert await b.outcome("nope") is None


async def test_expired_lease_is_taken_over_and_the_old_owner_loses(open_pair: Any) -> None:
    wall = FakeWall()
    async with open_pair(wall, (_remote_owner("a"), _remote_owner("b"))) as (a, b):
        [mine] = await a.claim_many(["ev-x"], 30.0)
        wall.now += 29.0
        [still] = await b.claim_many(["ev-x"], 30.0)
        assert still.decision is ClaimDecision.HELD  # not before the lease is over
        wall.now += 2.0
        [taken] = await b.claim_many(["ev-x"], 30.0)
        # a may have contacted the provider: the outcome is unknown
        assert taken.decision is ClaimDecision.TAKEOVER and taken.owner == a.owner
        # a was only slow, not dead: its late outcome must not overwrite b's claim
        assert await a.settle_many([Settle(mine, sent("ev-x"))]) == [False]
        assert await b.settle_many([Settle(taken, sent("ev-x"))]) == [True]
        [c] = await a.claim_many(["ev-x"], 30.0)
        assert c.decision is ClaimDecision.OUTCOME


async def test_a_released_claim_is_free_for_the_retry(open_pair: Any) -> None:
    wall = FakeWall()
    async with open_pair(wall, (_remote_owner("a"), _remote_owner("b"))) as (a, b):
        [mine] = await a.claim_many(["ev-r"], 60.0)
        assert await a.settle_many([Settle(mine, None)]) == [True]  # transient failure
        [retry] = await b.claim_many(["ev-r"], 60.0)
        assert retry.decision is ClaimDecision.SEND  # not sent before: no unknown outcome
        [copy] = await a.claim_many(["ev-r"], 60.0)
        assert copy.decision is ClaimDecision.HELD


async def test_racing_claims_have_one_winner_each(open_pair: Any) -> None:
    wall = FakeWall()
    async with open_pair(wall, (_remote_owner("a"), _remote_owner("b"))) as (a, b):
        ids = [f"race-{i}" for i in range(50)]
        answers: list[list[Claim]] = []

        async def claim(store: ClaimStore, chunk: list[str]) -> None:
            answers.append(await store.claim_many(chunk, 60.0))

        async with trio.open_nursery() as nursery:
            for i in range(0, 50, 5):  # overlapping batches from both sides, all at once
                nursery.start_soon(claim, a, ids[i : i + 10])
                nursery.start_soon(claim, b, ids[i : i + 7])
        winners: dict[str, int] = {}
        for batch in answers:
            for c in batch:
                if c.decision in (ClaimDecision.SEND, ClaimDecision.TAKEOVER):
                    winners[c.event_id] = winners.get(c.event_id, 0) + 1
        assert winners == {e: 1 for e in ids}


async def test_a_dead_owner_on_this_machine_is_taken_over_at_once(open_pair: Any) -> None:
    done = await trio.run_process(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_stdout=True
    )
    dead = new_owner().rsplit("/", 2)[0] + f"/{int(done.stdout)}/deadbeef"
    assert owner_dead(dead) and not owner_dead(new_owner())
    wall = FakeWall()
    async with open_pair(wall, (dead, _remote_owner("b"))) as (a, b):
        await a.claim_many(["ev-d"], 3600.0)
        [taken] = await b.claim_many(["ev-d"], 60.0)
        assert taken.decision is ClaimDecision.TAKEOVER and taken.owner == dead


@pytest.mark.services
async def test_the_suppression_list_in_elasticsearch_is_shared(elasticsearch_url: str) -> None:
    from actors.email_server.suppression_elasticsearch import ElasticsearchSuppression

    index = f"test-suppressed-{uuid.uuid4().hex[:8]}"
    async with (
        ElasticsearchSuppression(elasticsearch_url, index) as one,
        ElasticsearchSuppression(elasticsearch_url, index) as other,
    ):
        try:
            assert await one.add("Bob@Example.com", "550 5.1.1 no such user", event_id="e1")
            assert not await other.add("bob@example.com", "again")  # the first entry stays
            assert one.lookup("BOB@example.com") is not None  # at once where it was added
            await one._es.indices.refresh(index=index)  # noqa: SLF001  (the index's refresh interval)
            await other.reload()  # what keep_fresh does every refresh_s
            entry = other.lookup("bob@EXAMPLE.com")
            assert (
                entry is not None
                and entry.reason == "550 5.1.1 no such user"
                and entry.event_id == "e1"
            )
            assert [e.address for e in await other.entries()] == ["bob@example.com"]
            assert await other.remove("bob@example.com") and other.lookup("bob@example.com") is None
            assert not await other.remove("bob@example.com")
        finally:
            await one._es.indices.delete(index=index)  # noqa: SLF001
