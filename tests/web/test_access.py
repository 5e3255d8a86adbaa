"""Who gets in, and what every answer carries: login, CSRF, session cookie, CSP.

Plain httpx over loopback against a running embedded system (the browser tests are in
test_browser.py).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from actors.web.access import CSP, FRAME_CSP
from tests.support.embedded import TOKEN, request, secured_config
from tests.support.http import http_config
from tests.support.security import make_certs
from tests.support.web import csrf_of, logged_in_client, serving, web_config


async def test_without_login_pages_redirect_and_actions_are_refused(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web, httpx.AsyncClient(base_url=web.url) as c:
        page = await c.get("/web/emails", headers={"accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"] == "/web/login"
        assert (await c.get("/web/tree.json")).status_code == 401
        for path, data in [
            ("/web/tree/act", {"process": "embedded", "action": "pause"}),
            ("/web/suppressions", {"action": "add", "address": "x@example.com"}),
            ("/web/emails/any/resend", {"nonce": "n"}),
        ]:
            reply = await c.post(path, data=data)
            assert reply.status_code == 401, path
        assert not web.app.system.intake.statistics().paused


async def test_an_action_without_the_csrf_token_is_refused(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web, logged_in_client(web) as c:
        refused = await c.post("/web/tree/act", data={"process": "embedded", "action": "pause"})
        wrong = await c.post(
            "/web/tree/act", data={"process": "embedded", "action": "pause", "csrf": "guess"}
        )
        assert (refused.status_code, wrong.status_code) == (403, 403)
        assert "CSRF" in refused.text
        assert not web.app.system.intake.statistics().paused
        # The same action with the session's token goes through (and is undone).
        token = csrf_of((await c.get("/web/tree")).text)
        done = await c.post(
            "/web/tree/act", data={"process": "embedded", "action": "pause", "csrf": token}
        )
        assert done.status_code == 303
        assert web.app.system.intake.statistics().paused
        await c.post("/web/tree/act", data={"process": "embedded", "action": "resume",
                                            "csrf": token})  # fmt: skip
        assert not web.app.system.intake.statistics().paused


async def test_login_needs_the_grpc_token_and_a_fresh_csrf_token(tmp_path: Path) -> None:
    config = secured_config(tmp_path, http=http_config(),
                            service={"run_dir": str(tmp_path / "run")})  # fmt: skip
    async with serving(config) as web, httpx.AsyncClient(base_url=web.url) as c:
        page = await c.get("/web/login")
        assert "no-secret" not in page.text
        token = csrf_of(page.text)
        no_csrf = await c.post("/web/login", data={"secret": TOKEN})
        assert no_csrf.status_code == 403
        wrong = await c.post("/web/login", data={"secret": "not-it", "csrf": token})
        assert wrong.status_code == 401
        assert (await c.get("/web/tree.json")).status_code == 401
        right = await c.post("/web/login", data={"secret": TOKEN, "csrf": token})
        assert right.status_code == 303
        cookie = right.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/web" in cookie
        assert (await c.get("/web/tree.json")).status_code == 200
        # Logging in gave a new CSRF token: the one from before login is worth nothing now.
        stale = await c.post("/web/tree/act", data={"process": "embedded",
                                                    "action": "pause", "csrf": token})  # fmt: skip
        assert stale.status_code == 403


async def test_without_a_token_the_login_page_says_so(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web, httpx.AsyncClient(base_url=web.url) as c:
        page = await c.get("/web/login")
        assert 'id="no-secret"' in page.text
        assert "loopback" in page.text


async def test_every_page_carries_the_csp_and_the_message_its_own(tmp_path: Path) -> None:
    async with serving(web_config(tmp_path)) as web, logged_in_client(web) as c:
        accepted = await web.app.request(request())
        await web.app.wait_terminal(accepted.event_id)
        for path in ["/web/login", "/web/emails", f"/web/emails/{accepted.event_id}",
                     "/web/templates", "/web/tree", "/web/suppressions"]:  # fmt: skip
            reply = await c.get(path)
            assert reply.status_code == 200, path
            assert reply.headers["content-security-policy"] == CSP, path
            assert reply.headers["x-frame-options"] == "DENY", path
            assert "<script>" not in reply.text and "onclick" not in reply.text, path
        frame = await c.get(f"/web/emails/{accepted.event_id}/rendered")
        assert frame.headers["content-security-policy"] == FRAME_CSP
        assert "script-src" not in FRAME_CSP and "default-src 'none'" in FRAME_CSP


async def test_under_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    config = web_config(tmp_path, http={"tls_cert_file": str(certs.cert),
                                        "tls_key_file": str(certs.key)})  # fmt: skip
    async with serving(config) as web:
        assert web.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        async with httpx.AsyncClient(base_url=web.url, verify=ctx) as c:
            page = await c.get("/web/login")
            entered = await c.post("/web/login", data={"csrf": csrf_of(page.text)})
        assert entered.status_code == 303
        assert "secure" in entered.headers["set-cookie"].lower().split("; ")
