"""The web view in a real browser: Debian's headless chromium, driven by selenium, against a
running embedded system (``make browser-deps`` installs the browser).

The browser runs in a worker thread (selenium blocks); the system serves it from the test's
Trio run meanwhile. Each test saves a screenshot of its page in var/screenshots/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from actors.auth.service import RequestEmail
from runtime import InjectedCrash
from tests.support.web import (
    WAIT,
    browser,
    log_in,
    no_alerts,
    screenshot,
    seed_documents,
    serving,
    web_config,
)

HOSTILE_SUBJECT = '<script>alert("subject")</script><img src=x onerror=alert("img")>'
HOSTILE_NAME = '"><img src=x onerror=alert("name")><script>alert("name2")</script>'
HOSTILE_URL = 'javascript:alert("url")'


async def test_search_finds_what_was_sent_and_paging_returns_each_once(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web:
        seeded = await seed_documents(web.app, 250, "paging@example.com")
        sent = []
        for i in range(3):
            accepted = await web.app.request(
                RequestEmail(
                    recipient="fresh@example.com",
                    template="welcome",
                    variables={"name": f"Fresh {i}", "product": "Acme"},
                )  # fmt: skip
            )
            sent.append(accepted.event_id)
        for event_id in sent:
            await web.app.wait_terminal(event_id)

        def browse() -> tuple[list[str], list[str], str, list[str]]:
            with browser() as driver:
                log_in(driver, web)
                driver.get(f"{web.web}/emails?recipient=fresh@example.com")
                rows = driver.find_elements(By.CSS_SELECTOR, "#log tbody tr[data-event-id]")
                fresh = [r.get_attribute("data-event-id") for r in rows]
                subjects = [r.find_element(By.CLASS_NAME, "subject").text for r in rows]
                counts = driver.find_element(By.ID, "counts").text
                screenshot(driver, "emails")
                # Every seeded document, 100 a page, oldest first, by following "Next page".
                driver.get(f"{web.web}/emails?recipient=paging@example.com&size=100&order=oldest")
                paged: list[str] = []
                while True:
                    rows = driver.find_elements(By.CSS_SELECTOR, "#log tbody tr[data-event-id]")
                    paged.extend(r.get_attribute("data-event-id") for r in rows)
                    following = driver.find_elements(By.ID, "next-page")
                    if not following:
                        break
                    following[0].click()
                no_alerts(driver)
                return fresh, paged, counts, subjects

        fresh, paged, counts, subjects = await trio.to_thread.run_sync(browse)
        assert subjects == [
            "Welcome to Acme, Fresh 2!",
            "Welcome to Acme, Fresh 1!",
            "Welcome to Acme, Fresh 0!",
        ]  # the template's subject, newest first
        assert sorted(fresh) == sorted(sent)
        assert "SENT 3" in counts and "3 matching" in counts
        assert paged == seeded  # each once, in order, over three pages


async def test_hostile_content_is_shown_as_text_and_runs_nothing(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web:
        accepted = await web.app.request(
            RequestEmail(
                recipient="victim@example.com",
                template="password-reset",
                subject=HOSTILE_SUBJECT,
                variables={"name": HOSTILE_NAME, "reset_url": HOSTILE_URL},
            )  # fmt: skip
        )
        doc = await web.app.wait_terminal(accepted.event_id)
        assert doc.subject == HOSTILE_SUBJECT

        def browse() -> dict[str, Any]:
            with browser() as driver:
                log_in(driver, web)
                driver.get(f"{web.web}/emails?recipient=victim@example.com")
                listed = driver.find_element(By.CSS_SELECTOR, "#log td.subject").text
                no_alerts(driver)
                driver.get(f"{web.web}/emails/{accepted.event_id}")
                WebDriverWait(driver, WAIT).until(
                    lambda d: d.find_element(By.ID, "message").get_attribute("src")
                )
                out: dict[str, Any] = {
                    "listed": listed,
                    "subject": driver.find_element(By.ID, "rendered-subject").text,
                    "timeline": driver.find_element(By.ID, "timeline").text,
                    "page_scripts": [
                        s.get_attribute("src") for s in driver.find_elements(By.TAG_NAME, "script")
                    ],  # fmt: skip
                    "page_imgs": len(driver.find_elements(By.TAG_NAME, "img")),
                    "sandbox": driver.find_element(By.ID, "message").get_attribute("sandbox"),
                }
                screenshot(driver, "email")
                driver.switch_to.frame(driver.find_element(By.ID, "message"))
                body = driver.find_element(By.TAG_NAME, "body")
                out["frame_text"] = body.text
                out["frame_imgs"] = len(driver.find_elements(By.TAG_NAME, "img"))
                link = driver.find_element(By.LINK_TEXT, "Reset my password")
                out["href"] = link.get_attribute("href")
                link.click()  # a javascript: URL in a frame without allow-scripts: nothing
                driver.switch_to.default_content()
                out["url_after"] = driver.current_url
                no_alerts(driver)
                driver.execute_script('alert("probe")')  # the hook sees an alert that happens
                out["probe"] = driver.execute_script("return window.__alerts")
                return out

        seen = await trio.to_thread.run_sync(browse)
        assert seen["probe"] == ["probe"]
        assert seen["listed"] == HOSTILE_SUBJECT  # the text itself, shown, not interpreted
        assert seen["subject"] == HOSTILE_SUBJECT
        assert seen["page_imgs"] == 0
        assert all(src.endswith("/web/static/app.js") for src in seen["page_scripts"])
        assert seen["sandbox"] == ""  # sandboxed, and allow-scripts not among its permissions
        assert 'onerror=alert("name")' in seen["frame_text"]  # escaped by the template
        assert seen["frame_imgs"] == 0
        assert seen["href"] == HOSTILE_URL
        assert seen["url_after"].endswith(f"/web/emails/{accepted.event_id}")
        assert "REQUESTED" in seen["timeline"] and "SENT" in seen["timeline"]


async def test_email_page_shows_timeline_message_source_and_resends(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web:
        accepted = await web.app.request(
            RequestEmail(
                recipient="ada@example.com",
                template="verification",
                variables={"name": "Ada", "code": "493817", "expires_minutes": 10},
            )
        )
        await web.app.wait_terminal(accepted.event_id)

        def browse() -> dict[str, Any]:
            with browser() as driver:
                log_in(driver, web)
                driver.get(f"{web.web}/emails/{accepted.event_id}")
                out = {"timeline": driver.find_element(By.ID, "timeline").text}
                driver.find_element(By.TAG_NAME, "summary").click()
                out["mime"] = driver.find_element(By.ID, "mime").text
                driver.switch_to.frame(driver.find_element(By.ID, "message"))
                out["frame"] = driver.find_element(By.TAG_NAME, "body").text
                driver.switch_to.default_content()
                driver.find_element(By.ID, "resend").click()
                driver.switch_to.alert.accept()  # the confirmation
                WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.ID, "resent-from"))
                out["new_url"] = driver.current_url
                out["resent_from"] = driver.find_element(By.ID, "resent-from").text
                no_alerts(driver)
                return out

        seen = await trio.to_thread.run_sync(browse)
        assert "REQUESTED" in seen["timeline"] and "SENT" in seen["timeline"]
        assert "maildir" in seen["timeline"]
        assert "493817" in seen["frame"]
        assert f"X-Mailactors-Event-Id: {accepted.event_id}" in seen["mime"]
        assert "Content-Type: multipart/alternative" in seen["mime"]
        assert seen["resent_from"] == accepted.event_id
        new_id = seen["new_url"].rsplit("/", 1)[1]
        assert new_id != accepted.event_id
        new = await web.app.wait_terminal(new_id)
        assert (new.recipient, new.template, new.variables["code"]) == (
            "ada@example.com", "verification", "493817")  # fmt: skip


async def test_templates_page_previews_text_and_html(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web:

        def browse() -> dict[str, Any]:
            with browser() as driver:
                log_in(driver, web)
                driver.get(f"{web.web}/templates")
                section = driver.find_element(By.ID, "template-verification")
                out = {"text": section.find_element(By.CSS_SELECTOR, "pre.text").text}
                driver.switch_to.frame(section.find_element(By.TAG_NAME, "iframe"))
                out["html"] = driver.find_element(By.TAG_NAME, "body").text
                driver.switch_to.default_content()
                screenshot(driver, "templates")
                no_alerts(driver)
                return out

        seen = await trio.to_thread.run_sync(browse)
        assert "[code]" in seen["text"] and "[code]" in seen["html"]


def live(driver: Any) -> Any:
    """A wait that reads again when the page's live updates replaced an element it held."""
    return WebDriverWait(
        driver, WAIT, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)
    )


async def test_tree_updates_live_after_a_crash_and_restarts_on_request(tmp_path: Path) -> None:
    config = web_config(tmp_path, throttle={"rate": 250.0, "per_domain": {"example.com": 50.0}})
    async with serving(config) as web:
        crashed = "email-server/throttler"
        opened = trio.Event()
        seen: dict[str, Any] = {}

        def row(driver: Any, path: str) -> Any:
            return driver.find_element(By.CSS_SELECTOR, f'#trees tr[data-path="{path}"]')

        def steady(driver: Any, read: Any) -> Any:
            """``read(driver)`` again while the live tree replaces the rows it touches."""
            out: list[Any] = []

            def attempt(d: Any) -> bool:
                out.append(read(d))
                return True

            live(driver).until(attempt)
            return out[-1]

        def browse(token: trio.lowlevel.TrioToken) -> None:
            with browser() as driver:
                log_in(driver, web)
                driver.get(f"{web.web}/tree")
                live(driver).until(lambda d: row(d, crashed))
                seen["before"] = steady(
                    driver, lambda d: row(d, crashed).get_attribute("data-restarts")
                )
                seen["buckets"] = steady(
                    driver,
                    lambda d: [
                        b.text for b in d.find_elements(By.CSS_SELECTOR, "#trees tr.bucket")
                    ],
                )
                driver.execute_script("window.__same_page = true")
                trio.from_thread.run_sync(opened.set, trio_token=token)
                live(driver).until(lambda d: row(d, crashed).get_attribute("data-restarts") == "1")
                seen["error"] = steady(
                    driver, lambda d: row(d, crashed).find_element(By.CLASS_NAME, "error").text
                )
                seen["same_page"] = driver.execute_script("return window.__same_page")
                seen["mode"] = driver.find_element(By.ID, "trees").get_attribute("data-mode")
                driver.set_window_size(1400, 2400)
                screenshot(driver, "tree")
                driver.set_window_size(1400, 1000)
                # And a restart asked for on the page, confirmed.
                target = "integration/sweeper"
                steady(
                    driver, lambda d: row(d, target).find_element(By.CSS_SELECTOR, "button").click()
                )
                driver.switch_to.alert.accept()
                WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.ID, "done"))
                seen["done"] = driver.find_element(By.ID, "done").text
                no_alerts(driver)

        async with trio.open_nursery() as nursery:
            token = trio.lowlevel.current_trio_token()
            nursery.start_soon(trio.to_thread.run_sync, browse, token)
            await opened.wait()
            await web.app.system.inject_crash(crashed, InjectedCrash("crash for the web view"))

        assert seen["before"] == "0"
        assert any(b.startswith("bucket provider") and "rate 250" in b for b in seen["buckets"])
        assert any(b.startswith("bucket example.com") for b in seen["buckets"]), seen["buckets"]
        assert "crash for the web view" in seen["error"]
        assert seen["same_page"] is True  # updated in place, not reloaded
        assert seen["mode"] == "events"  # pushed by the server, not polled
        assert "restarted=True" in seen["done"]
        by_path = web.app.system.snapshot().by_path()
        assert by_path["integration/sweeper"].restarts == 1


async def test_charts_draw_what_was_sent(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web:
        for i in range(20):
            accepted = await web.app.request(
                RequestEmail(
                    recipient=f"c{i}@example.com",
                    template="welcome",
                    variables={"name": "C", "product": "Acme"},
                )  # fmt: skip
            )
        await web.app.wait_terminal(accepted.event_id)

        def sent_line(driver: Any) -> bool:
            # Samples come every 5 s: reload until the SENT line has two points.
            driver.refresh()
            lines = driver.find_elements(By.CSS_SELECTOR, 'polyline[data-series="SENT"]')
            return bool(lines) and len(lines[0].get_attribute("points").split()) >= 2

        def browse() -> dict[str, Any]:
            with browser() as driver:
                log_in(driver, web)
                driver.get(f"{web.web}/charts")
                WebDriverWait(driver, 30, poll_frequency=1).until(sent_line)
                keys = [k.text for k in driver.find_elements(By.CSS_SELECTOR, ".legend .key")]
                screenshot(driver, "charts")
                no_alerts(driver)
                return {"keys": keys}

        seen = await trio.to_thread.run_sync(browse)
        assert any(k.startswith("SENT") for k in seen["keys"])
        assert any(k.startswith("p95") for k in seen["keys"])
