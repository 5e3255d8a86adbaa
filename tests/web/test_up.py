"""``supervisor.py up`` (embedded) serves the web view and prints where; its tree page reads
the process's control socket, as the console does (queue depths included)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.support.embedded_process import embedded_env, running_embedded
from tests.support.waiting import poll_until
from tests.support.web import csrf_of

URL_LINE = re.compile(r"mailactors web view: (http://127\.0\.0\.1:\d+/web/)")


async def test_up_prints_the_web_view_url_and_serves_it(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    async with running_embedded(embedded_env(tmp_path), log):
        await poll_until(lambda: bool(URL_LINE.search(log.read_text(errors="replace"))),
                         timeout=30, what="the web view's URL in up's output")  # fmt: skip
        found = URL_LINE.search(log.read_text(errors="replace"))
        assert found is not None
        url = found.group(1)
        async with httpx.AsyncClient(base_url=url) as client:
            page = await client.get("login")
            assert page.status_code == 200
            entered = await client.post("login", data={"csrf": csrf_of(page.text)})
            assert entered.status_code == 303
            trees = (await client.get("tree.json")).json()
    assert trees["errors"] == {}
    (process,) = trees["processes"]
    assert process["name"] == "embedded"
    assert "auth/requests" in {a["path"] for a in process["actors"]}
    assert process["queues"] is not None  # from the control socket's answer (the bus's depths)
