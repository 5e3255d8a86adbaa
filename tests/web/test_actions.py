"""The actions other than the tree's: suppressions added and removed in the web view take
effect on sending; the dead letters page; each needs the CSRF token."""

from __future__ import annotations

from pathlib import Path

from actors.domain.schema import Status
from tests.support.embedded import request
from tests.support.web import csrf_of, logged_in_client, serving, web_config

EVE = {"name": "<b>Eve</b>", "product": "Acme"}


async def test_a_suppression_added_here_stops_sending_and_removing_it_lets_it_go(
    tmp_path: Path,
) -> None:
    async with serving(web_config(tmp_path)) as web, logged_in_client(web) as c:
        token = csrf_of((await c.get("/web/suppressions")).text)
        refused = await c.post("/web/suppressions",
                               data={"action": "add", "address": "eve@example.com"})  # fmt: skip
        assert refused.status_code == 403
        added = await c.post("/web/suppressions", data={
            "action": "add", "address": "Eve@Example.com", "reason": "<i>asked</i>",
            "csrf": token})  # fmt: skip
        assert added.status_code == 303
        page = await c.get("/web/suppressions")
        assert "add Eve@Example.com: done" in page.text  # the flash, once
        assert "eve@example.com" in page.text and "&lt;i&gt;asked&lt;/i&gt;" in page.text
        assert "add Eve@Example.com" not in (await c.get("/web/suppressions")).text

        first = await web.app.request(request("welcome", "eve@example.com", variables=EVE))
        assert (await web.app.wait_terminal(first.event_id)).status is Status.SUPPRESSED

        removed = await c.post("/web/suppressions", data={
            "action": "remove", "address": "eve@example.com", "csrf": token})  # fmt: skip
        assert removed.status_code == 303
        second = await web.app.request(request("welcome", "eve@example.com", variables=EVE))
        assert (await web.app.wait_terminal(second.event_id)).status is Status.SENT


async def test_dead_letters_page_lists_the_runtimes_dead_letters(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web, logged_in_client(web) as c:
        token = csrf_of((await c.get("/web/tree")).text)
        page = await c.post("/web/tree/act", data={
            "process": "embedded", "action": "dead_letters", "csrf": token})  # fmt: skip
        assert page.status_code == 200
        assert "Dead letters of embedded" in page.text
        unknown = await c.post("/web/tree/act", data={
            "process": "nowhere", "action": "pause", "csrf": token})  # fmt: skip
        assert unknown.status_code == 400
        assert "no running process named" in unknown.text
