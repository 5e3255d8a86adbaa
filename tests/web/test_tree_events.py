"""The live tree as server-sent events, read by a real HTTP client from the running server:
an event about every second, the crash and its restart seen in the stream, and no stream
without a login."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from runtime import InjectedCrash
from tests.support.waiting import poll_until
from tests.support.web import logged_in_client, serving, web_config

CRASHED = "email-server/throttler"
MAX_EVENTS = 15  # about 15 s: a restart shows long before


def _restarts(event: dict[str, Any]) -> int:
    (process,) = event["processes"]
    (actor,) = [a for a in process["actors"] if a["path"] == CRASHED]
    return int(actor["restarts"])


async def test_tree_events_stream_the_tree_and_show_a_restart(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web, logged_in_client(web) as client:
        events: list[dict[str, Any]] = []
        async with client.stream("GET", "/web/tree/events") as reply:
            assert reply.status_code == 200
            headers = reply.headers
            names: set[str] = set()
            async for line in reply.aiter_lines():
                if line.startswith("event: "):
                    names.add(line.removeprefix("event: "))
                if not line.startswith("data: "):
                    continue
                events.append(json.loads(line.removeprefix("data: ")))
                if len(events) == 1:
                    await web.app.system.inject_crash(CRASHED, InjectedCrash("for the stream"))
                elif _restarts(events[-1]) == 1 or len(events) == MAX_EVENTS:
                    break
        async with httpx.AsyncClient(base_url=web.url) as stranger:
            refused = await stranger.get("/web/tree/events")
        # The stream closed by the client: the server goes on answering.
        after = await client.get("/web/tree.json")
    assert headers["content-type"].startswith("text/event-stream")
    assert "connect-src 'self'" in headers["content-security-policy"]
    assert names == {"tree"}
    assert _restarts(events[0]) == 0
    assert _restarts(events[-1]) == 1, f"no restart in {len(events)} events"
    (process,) = events[-1]["processes"]
    (crashed,) = [a for a in process["actors"] if a["path"] == CRASHED]
    assert "for the stream" in crashed["last_error"]
    assert refused.status_code == 401
    assert after.status_code == 200


async def test_tree_events_come_about_once_a_second_and_stop_when_the_viewer_goes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="mailactors.web")
    async with serving(web_config(tmp_path)) as web, logged_in_client(web) as client:
        stamps: list[float] = []
        async with client.stream("GET", "/web/tree/events") as reply:
            async for line in reply.aiter_lines():
                if line.startswith("data: "):
                    stamps.append(trio.current_time())
                    if len(stamps) == 3:
                        break
        # The server's generator ends on the disconnect, not at the process's end.
        await poll_until(lambda: "tree events: a viewer left" in caplog.text, timeout=10,
                         what="the stream to end on the server")  # fmt: skip
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(0.8 <= gap <= 6.0 for gap in gaps), gaps  # paced, not a flood
