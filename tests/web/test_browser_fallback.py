"""The tree page in a browser without server-sent events (``EventSource`` taken away before
the page's script runs): it falls back to asking every second, and still shows a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from runtime import InjectedCrash
from tests.support.web import WAIT, browser, log_in, serving, web_config

NO_EVENTS = "delete window.EventSource; window.EventSource = undefined;"
CRASHED = "email-server/throttler"


async def test_without_event_source_the_tree_is_polled(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web:
        shown = trio.Event()
        seen: dict[str, Any] = {}

        def restarts(driver: Any) -> str | None:
            rows = driver.find_elements(By.CSS_SELECTOR, f'#trees tr[data-path="{CRASHED}"]')
            return rows[0].get_attribute("data-restarts") if rows else None

        def browse(token: trio.lowlevel.TrioToken) -> None:
            with browser() as driver:
                driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                       {"source": NO_EVENTS})  # fmt: skip
                log_in(driver, web)
                driver.get(f"{web.web}/tree")
                WebDriverWait(driver, WAIT).until(lambda d: restarts(d) == "0")
                seen["mode"] = driver.find_element(By.ID, "trees").get_attribute("data-mode")
                trio.from_thread.run_sync(shown.set, trio_token=token)
                WebDriverWait(driver, WAIT).until(lambda d: restarts(d) == "1")
                seen["restarts"] = restarts(driver)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, browse, trio.lowlevel.current_trio_token())
            await shown.wait()
            await web.app.system.inject_crash(CRASHED, InjectedCrash("crash while polled"))
    assert seen["mode"] == "polling"
    assert seen["restarts"] == "1"
