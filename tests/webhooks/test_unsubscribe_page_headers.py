"""The unsubscribe page (a link in every newsletter, opened in a browser) may not be framed
and loads nothing; its form still posts back to itself."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from actors.webhooks import UnsubscribeTokens
from actors.webhooks.unsubscribe import unsubscribe_routes
from config import load_config

KEY = "unsubscribe-key-for-tests"


@pytest.mark.parametrize("good", [True, False])
async def test_the_page_forbids_framing_and_loads_nothing(
    good: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QA_UNSUB_KEY", KEY)  # secrets come from the process's environment
    config = load_config("embedded", env={}, overrides={
        "unsubscribe.categories": ["newsletter"], "unsubscribe.secret_env": "QA_UNSUB_KEY",
        "service.data_dir": str(tmp_path),
    })  # fmt: skip
    token = UnsubscribeTokens(KEY, ("newsletter",), 3600).make("ada@example.com", "newsletter")
    routes = unsubscribe_routes(config, opener=None)(None)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=Starlette(routes=routes))
    if not good:  # one character changed: a forged token
        token = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        page = await client.get(f"/unsubscribe/{token}")
    assert page.status_code == (200 if good else 403)
    assert ('method="post"' in page.text) is good
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "form-action 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
