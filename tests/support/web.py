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

from actors.domain.schema import EmailDocument, Status
from actors.profiles.embedded import Embedded, open_embedded
from actors.telemetry.metrics import EmailMetrics
from actors.telemetry.operations import open_operations
from tests.support.embedded import embedded_config
from tests.support.http import http_config, http_url
from tests.support.services import missing

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "SCREENSHOTS",
    "WebApp",
    "browser",
    "csrf_of",
    "logged_in_client",
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

