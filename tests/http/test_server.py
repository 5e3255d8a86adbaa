"""The HTTP edge, from outside: a real client over loopback, TLS, bind rules, body limits."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from actors.http import HttpServer
from config import ConfigError, HttpConfig
from runtime import ChildSpec, open_actor_system
from tests.support.embedded import embedded_config, running, secured_config
from tests.support.http import http_config, http_url
from tests.support.security import make_certs


async def test_healthz_answers_while_running_and_the_port_closes_after(tmp_path: Path) -> None:
    async with running(embedded_config(tmp_path, http=http_config())) as app:
        url = http_url(app)
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"{url}/healthz")
            missing = await client.get(f"{url}/no-such-page")
        assert reply.status_code == 200
        assert reply.json()["status"] == "ok"
        assert missing.status_code == 404
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/healthz")


def echo_routes(actor: Any) -> list[Any]:
    async def echo(request: Request) -> Response:
        return PlainTextResponse(str(len(await request.body())))

    return [Route("/echo", echo, methods=["POST"])]


async def test_a_body_over_the_limit_is_refused_declared_or_streamed() -> None:
    http = HttpConfig(enabled=True, port=0, max_body_bytes=1000)
    async with open_actor_system("t", shutdown=5.0) as system:
        await system.spawn(ChildSpec("http", HttpServer, args=(http, [echo_routes])))
        url = system.snapshot().by_path()["http"].extra["url"]  # type: ignore[index]
        async with httpx.AsyncClient() as client:
            small = await client.post(f"{url}/echo", content=b"x" * 1000)
            assert (small.status_code, small.text) == (200, "1000")
            declared = await client.post(f"{url}/echo", content=b"x" * 5000)
            assert declared.status_code == 413
            assert "1000 bytes" in declared.text

            async def chunks() -> Any:
                for _ in range(10):
                    yield b"y" * 500

            # Chunked, no length: refused once past the limit, the rest read and dropped.
            streamed = await client.post(f"{url}/echo", content=chunks())
            assert streamed.status_code == 413
            again = await client.post(f"{url}/echo", content=b"z" * 10)
            assert (again.status_code, again.text) == (200, "10")  # still serving


async def test_tls_when_configured(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    section = http_config(tls_cert_file=str(certs.cert), tls_key_file=str(certs.key))
    async with running(embedded_config(tmp_path, http=section)) as app:
        url = http_url(app)
        assert url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        async with httpx.AsyncClient(verify=ctx) as client:
            assert (await client.get(f"{url}/healthz")).status_code == 200
        async with httpx.AsyncClient() as client:  # the system's CAs do not know ours
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{url}/healthz")


def test_off_loopback_without_tls_and_token_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        embedded_config(tmp_path, http=http_config(host="0.0.0.0"))
    assert "http.host" in str(info.value)
    assert "TLS" in str(info.value)
    # With the gRPC token and TLS, the same host is accepted.
    certs = make_certs(tmp_path / "certs")
    secured_config(
        tmp_path,
        http=http_config(host="0.0.0.0", tls_cert_file=str(certs.cert),
                         tls_key_file=str(certs.key)),
    )  # fmt: skip


def test_cert_without_key_names_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        embedded_config(tmp_path, http=http_config(tls_cert_file="a.pem"))
    assert "tls_cert_file and tls_key_file" in str(info.value)
