"""The web view under test: a running embedded system serving it, a logged-in client,
and Debian's chromium driven by selenium (never a downloaded browser)."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from actors.domain.schema import EmailDocument, Status
from actors.profiles.embedded import Embedded, open_embedded
from actors.telemetry.metrics import EmailMetrics
from actors.telemetry.operations import open_operations
from protos import email_grpc
from runtime import AsyncioEdge
from tests.support.embedded import embedded_config, grpc_request
from tests.support.http import http_config, http_url
from tests.support.services import missing

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "WAIT",
    "SCREENSHOTS",
    "WebApp",
    "browser",
    "csrf_of",
    "log_in",
    "logged_in_client",
    "no_alerts",
    "publish_poison",
    "request_email",
    "screenshot",
    "seed_documents",
    "serving",
    "web_config",
]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Screenshots of the last run, beside the other things a run writes (var/ is not in git);
# docs/web/ holds the ones the README shows, copied from here.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
# Whatever calls alert() is recorded instead of opening a dialog: a test reads the record.
ALERT_HOOK = (
    "window.__alerts = []; window.alert = function (m) { window.__alerts.push(String(m)); };"
)


def web_config(tmp_path: Path, **sections: dict[str, Any]) -> Any:
    """The embedded profile with the HTTP endpoint on a free port, control sockets in tmp."""
    sections.setdefault("http", {}).update(http_config())
    sections.setdefault("service", {}).update(run_dir=str(tmp_path / "run"))
    return embedded_config(tmp_path, **sections)


class WebApp:
    def __init__(self, app: Embedded, url: str) -> None:
        self.app = app
        self.url = url
        self.web = f"{url}/web"


@asynccontextmanager
async def serving(config: Any) -> AsyncIterator[WebApp]:
    """The embedded system with its metrics and control endpoint, as ``supervisor.py up``."""
    metrics = EmailMetrics()
    async with open_embedded(config, grpc=False, shutdown=10.0, metrics=metrics) as app:
        async with open_operations(app.system, config, "embedded", bus=app.bus, metrics=metrics):
            yield WebApp(app, http_url(app))


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


@asynccontextmanager
async def logged_in_client(web: WebApp, secret: str = "") -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.url, follow_redirects=False) as client:
        page = await client.get("/web/login")
        reply = await client.post(
            "/web/login", data={"csrf": csrf_of(page.text), "secret": secret}
        )
        assert reply.status_code == 303, reply.text
        yield client


async def seed_documents(app: Embedded, n: int, recipient: str, **fields: Any) -> list[str]:
    """*n* stored documents a millisecond apart (newest last), as integration writes them."""
    start = datetime.now(UTC) - timedelta(hours=1)
    docs = [
        EmailDocument(
            event_id=f"seed-{i:06d}-{recipient}",
            recipient=recipient,
            template="welcome",
            variables={"name": f"Seed {i}", "product": "Acme"},
            subject=f"seeded {i}",
            status=Status.SENT,
            created_at=start + timedelta(milliseconds=i),
            **fields,
        )
        for i in range(n)
    ]
    for i in range(0, n, 500):
        await app.store.save_many(docs[i : i + 500])
    return [d.event_id for d in docs]


@contextmanager
def browser() -> Iterator[Any]:
    """Headless chromium from Debian's package, window.alert hooked in every new document."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        missing(f"{CHROMIUM} and {CHROMEDRIVER} (make browser-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": ALERT_HOOK}
        )
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


WAIT = 15.0  # seconds a browser waits for a page to show what a test expects


def log_in(driver: Any, web: WebApp) -> None:
    driver.get(f"{web.web}/login")
    driver.find_element(By.ID, "no-secret")  # no token configured: the page says so
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, WAIT).until(lambda d: d.current_url.endswith("/web/emails"))


def no_alerts(driver: Any) -> None:
    """Nothing called alert() (the hook records it) and no dialog is open."""
    assert driver.execute_script("return window.__alerts") == []
    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return
    raise AssertionError(f"a dialog is open: {text!r}")


async def request_email(edge: AsyncioEdge, port: int, recipient: str) -> str:
    from grpclib.client import Channel

    async def go() -> str:
        channel = Channel("127.0.0.1", port)
        try:
            reply = await email_grpc.AuthServiceStub(channel).RequestEmail(
                grpc_request(recipient=recipient, template="welcome",
                             variables={"name": "Dee", "product": "Acme"})  # fmt: skip
            )
            return str(reply.event_id)
        finally:
            channel.close()

    return await edge.run(go)


async def publish_poison(edge: AsyncioEdge, env: dict[str, str]) -> None:
    """A send message that is not JSON: the email server dead-letters it."""
    import aio_pika

    async def go() -> None:
        connection = await aio_pika.connect(env["MAILACTORS__BUS__URL"])
        try:
            channel = await connection.channel()
            exchange = await channel.get_exchange(env["MAILACTORS__BUS__SEND_EXCHANGE"])
            queue = env["MAILACTORS__BUS__SEND_QUEUE"]
            await exchange.publish(aio_pika.Message(b"not json at all"), routing_key=queue)
        finally:
            await connection.close()

    await edge.run(go)
