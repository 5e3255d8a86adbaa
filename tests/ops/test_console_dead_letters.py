"""``console --dead-letters`` reads the broker's dead-letter queue through one service only.

Every service of a cluster shares the one DLQ; asked through all of them at
once, each read (and held) a part of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from actors.ops.console import discover, fetch_dead_letters
from runtime import ActorSystem, ControlEndpoint, serve_control_unix


async def test_the_bus_dead_letters_are_read_through_one_service(
    actor_system: ActorSystem, short_dir: Path
) -> None:
    reads: list[str] = []

    def reader(name: str) -> Callable[[int], Awaitable[list[dict[str, object]]]]:
        async def read(limit: int) -> list[dict[str, object]]:
            await trio.lowlevel.checkpoint()
            reads.append(name)
            return [{"queue": "q", "reason": "r", "eventId": "e", "body": "{}"}]

        return read

    names = ["auth", "email-server-0", "email-server-1", "integration"]
    async with trio.open_nursery() as nursery:
        for name in names:
            endpoint = ControlEndpoint(actor_system, name=name, dead_letters=reader(name))
            await nursery.start(serve_control_unix, endpoint, short_dir / f"{name}.sock")
        results, errors = await fetch_dead_letters(discover(short_dir), limit=10)
        nursery.cancel_scope.cancel()
    assert errors == {}
    assert sorted(results) == names
    assert reads == ["auth"]  # one read of the shared queue
    assert [n for n, r in results.items() if "external" in r] == ["auth"]
    assert all("recent" in r and "count" in r for r in results.values())


async def test_external_must_be_a_boolean(actor_system: ActorSystem) -> None:
    endpoint = ControlEndpoint(actor_system, name="x")
    answer = await endpoint.handle({"cmd": "dead_letters", "external": "no"})
    assert answer == {"ok": False, "error": "dead_letters: external must be true or false"}
