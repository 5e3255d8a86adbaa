"""Never sent twice across worker processes: real RabbitMQ, the Elasticsearch API, a real
SMTP server, email-server processes with separate state dirs, SIGKILLs.

The test publishes EmailSendEvents itself, as an outside team's plain AMQP
client would, and counts what the SMTP server received by eventId.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from actors.auth.faults import CRASH_ACCEPT_EVERY, CRASH_AFTER_ACCEPT
from actors.domain.schema import EmailSendEvent, Status
from actors.stores.claims import MACHINE_ENV, UNKNOWN_OUTCOME_REASON
from runtime import open_asyncio_edge
from tests.support.smtp_servers import CapturingServer
from tests.support.workers import StatusSink, Workers, received, workers_env

pytestmark = [pytest.mark.services]


def event(i: int, run: str) -> EmailSendEvent:
    return EmailSendEvent(
        event_id=f"{run}-{i}",
        recipient=f"user{i}@example.com",
        template="welcome",
        variables={"name": "Ada", "product": "Acme"},
        requested_at=datetime.now(UTC),
    )


async def test_copies_published_two_and_three_times_reach_smtp_once(
    tmp_path: Path, elasticsearch_url: str, rabbitmq_url: str
) -> None:
    n = 1000
    with CapturingServer() as smtp:
        env = workers_env(tmp_path, elasticsearch_url, rabbitmq_url, smtp.port)
        async with open_asyncio_edge():
            sink = StatusSink(env)
            await sink.bus.open()
            try:
                async with (
                    Workers(env, 2, tmp_path).running(),
                    trio.open_nursery() as nursery,
                ):
                    await nursery.start(sink.run)
                    bus = sink.bus
                    rng = random.Random(13)

                    async def later(ev: EmailSendEvent, delay: float) -> None:
                        await trio.sleep(delay)
                        await bus.publish_send(ev)

                    async with trio.open_nursery() as pub:
                        for i in range(n):  # twice, back to back, at once
                            ev = event(i, "twice")
                            pub.start_soon(bus.publish_send, ev)
                            pub.start_soon(bus.publish_send, ev)
                            if i % 50 == 49:
                                await trio.lowlevel.checkpoint()
                        for i in range(n):  # three times, with random delays
                            ev = event(i, "thrice")
                            for _ in range(3):
                                pub.start_soon(later, ev, rng.uniform(0, 2.0))
                    # one status per copy, in the end: the sender's, or the recorded one again
                    await sink.wait_for(lambda: len(sink.statuses) >= 5 * n, 240)
                    nursery.cancel_scope.cancel()
            finally:
                await sink.bus.close()
        got = received(smtp)
    expected = {f"twice-{i}" for i in range(n)} | {f"thrice-{i}" for i in range(n)}
    assert set(got) == expected
    twice = {k: v for k, v in got.items() if v > 1}
    assert not twice, (
        f"{len(twice)} emails reached the SMTP server more than once: {list(twice.items())[:5]}"
    )
    assert {s.status for s in sink.statuses} == {Status.SENT}


@pytest.mark.parametrize("policy", ["fail", "resend"])
async def test_a_kill_loop_loses_nothing_and_duplicates_only_what_the_policy_allows(
    tmp_path: Path, elasticsearch_url: str, rabbitmq_url: str, policy: str
) -> None:
    """Scaled down for make test (supervisor.py soak runs the full size): 1,500 emails,
    2 workers, 4 SIGKILLs at random moments plus 2 crashes right after an acceptance."""
    n, kills = 1500, 4
    crash_file = tmp_path / "accept-crashes"
    crash_file.write_text("2")
    with CapturingServer() as smtp:
        env = workers_env(
            tmp_path, elasticsearch_url, rabbitmq_url, smtp.port,
            MAILACTORS__EMAIL_SERVER__UNKNOWN_OUTCOME=policy,
            **{CRASH_AFTER_ACCEPT: str(crash_file), CRASH_ACCEPT_EVERY: "97"},
        )
        async with open_asyncio_edge():
            sink = StatusSink(env)
            await sink.bus.open()
            try:
                workers = Workers(env, 2, tmp_path)
                async with workers.running(), trio.open_nursery() as nursery:
                    await nursery.start(sink.run)
                    rng = random.Random(policy)

                    async def kill_loop() -> None:
                        for _ in range(kills):
                            await trio.sleep(rng.uniform(1.0, 2.5))
                            workers.kill(rng.randrange(2))

                    async with trio.open_nursery() as work:
                        work.start_soon(kill_loop)
                        for i in range(n):  # a steady flow, ~300/s
                            await sink.bus.publish_send(event(i, "kill"))
                            if i % 30 == 29:
                                await trio.sleep(0.1)
                    ids = {f"kill-{i}" for i in range(n)}
                    await sink.wait_for(lambda: ids <= set(sink.final()), 240)
                    nursery.cancel_scope.cancel()
            finally:
                await sink.bus.close()
        got = received(smtp)
    final = sink.final()
    duplicates = sum(c - 1 for c in got.values() if c > 1)
    resent = workers.count("outcome unknown, sending again (resend)")
    deaths = len(workers.exits)
    assert deaths >= kills  # the kills (and the injected crashes) happened
    for event_id, status in final.items():  # nothing lost, each with its reason
        assert status.status in (Status.SENT, Status.FAILED), status
        if status.status is Status.SENT:
            assert got[event_id] >= 1, f"{event_id} SENT but never received"
        else:
            assert status.error == UNKNOWN_OUTCOME_REASON, status
    if policy == "fail":
        assert duplicates == 0, {k: v for k, v in got.items() if v > 1}
    else:
        assert duplicates <= resent, (duplicates, resent)
        assert not any(s.status is Status.FAILED for s in final.values())
    print(f"policy={policy} deaths={deaths} duplicates={duplicates} resent={resent}")


async def test_a_dead_workers_claims_are_taken_over_after_the_lease(
    tmp_path: Path, elasticsearch_url: str, rabbitmq_url: str
) -> None:
    """Workers on 'two machines' (no pid check between them): only the lease frees the claims."""
    lease = 4.0
    crash_file = tmp_path / "accept-crashes"
    crash_file.write_text("1")
    with CapturingServer(delay=0.05) as smtp:  # slow enough that claims are held when it dies
        env = workers_env(
            tmp_path, elasticsearch_url, rabbitmq_url, smtp.port,
            MAILACTORS__EMAIL_SERVER__UNKNOWN_OUTCOME="fail",
            MAILACTORS__EMAIL_SERVER__CLAIM_LEASE_S=str(lease),
        )
        per_worker: dict[int, dict[str, str]] = {
            0: {
                MACHINE_ENV: "machine-a",
                CRASH_AFTER_ACCEPT: str(crash_file),
                CRASH_ACCEPT_EVERY: "20",
            },
            1: {MACHINE_ENV: "machine-b"},
        }
        async with open_asyncio_edge():
            sink = StatusSink(env)
            await sink.bus.open()
            try:
                workers = Workers(env, 2, tmp_path, per_worker)
                workers.restart = False  # machine-a does not come back
                async with workers.running(), trio.open_nursery() as nursery:
                    await nursery.start(sink.run)
                    n = 200
                    published_at = trio.current_time()  # every claim is younger than this
                    for i in range(n):
                        await sink.bus.publish_send(event(i, "lease"))
                    await workers.wait_for(lambda: any(i == 0 for i, _ in workers.exits), 60)
                    ids = {f"lease-{i}" for i in range(n)}
                    await sink.wait_for(lambda: ids <= set(sink.final()), 120)
                    done_at = trio.current_time()
                    nursery.cancel_scope.cancel()
            finally:
                await sink.bus.close()
        got = received(smtp)
    final = sink.final()
    unknown = [s for s in final.values() if s.status is Status.FAILED]
    assert unknown, "machine-a held claims when it died"
    assert all(s.error == UNKNOWN_OUTCOME_REASON for s in unknown)
    assert all(s.status in (Status.SENT, Status.FAILED) for s in final.values())
    # not before the lease ran out (claims wait for an SMTP connection, so a claim can be
    # older than the death: its lease is counted from the claim)
    assert done_at - published_at >= lease
    assert max(got.values()) == 1  # policy fail: never a second copy
    assert workers.count("took over") == len(unknown)
