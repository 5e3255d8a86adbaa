"""HTTPS delivery to a named host: the certificate is checked against the name (SNI and
hostname), with the CA of ``webhooks.ca_file``; a refused one is the delivery's error."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio

from actors.webhooks import WebhookItem
from actors.webhooks.delivery import resolve_allowed, tls_context
from config import ConfigError, WebhookEndpointConfig, WebhooksConfig
from tests.support.webhooks import WatchedOutbox, dispatching, open_receiver

trustme = pytest.importorskip("trustme")

SECRET = "whsec_" + "dGxzLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODk="
NAME = "localhost"  # a name, not an address: the certificate must be checked against it


def _issue(ca: object, directory: Path, name: str) -> tuple[str, str]:
    """A server certificate for ``name`` signed by ``ca``: (chain file, key file)."""
    directory.mkdir()
    cert = ca.issue_cert(name)  # type: ignore[attr-defined]
    chain, key = directory / "server.pem", directory / "key.pem"
    chain.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    return str(chain), str(key)


def _item(n: int, endpoint: str) -> WebhookItem:
    return WebhookItem(
        webhook_id=f"msg_tls{n}", endpoint=endpoint, event_id=f"tls-{n}", sequence=n,
        body=b'{"status": "SENT"}', created_at=time.time(),
    )  # fmt: skip


async def test_the_certificate_is_checked_against_the_name(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    good_cert, good_key = _issue(ca, tmp_path / "good", NAME)
    # Same CA, another name: only the name check can refuse it.
    other_cert, other_key = _issue(ca, tmp_path / "other", "hooks.example.org")
    (tmp_path / "secret").write_text(SECRET)
    # The receivers listen where the guard will send the request for the name.
    address = str(await resolve_allowed(NAME, 443, allow_private=True))
    async with (
        open_receiver(SECRET, certfile=good_cert, keyfile=good_key, host=address) as good,
        open_receiver(SECRET, certfile=other_cert, keyfile=other_key, host=address) as other,
    ):
        endpoints = []
        for name, receiver in (("good", good), ("other", other)):
            port = urlsplit(receiver.url).port
            assert receiver.url.startswith("https://")
            endpoints.append(WebhookEndpointConfig(
                name=name, url=f"https://{NAME}:{port}/hook", secret_file=str(tmp_path / "secret"),
            ))  # fmt: skip
        settings = WebhooksConfig(
            enabled=True, allow_private=True, ca_file=str(ca_file), endpoints=tuple(endpoints),
            base_delay_s=0.05, max_delay_s=0.1, max_age_s=0.3, breaker_failures=100,
        )  # fmt: skip
        async with WatchedOutbox(str(tmp_path / "outbox.sqlite3"), settings.max_age_s) as outbox:
            await outbox.add_many([_item(1, "good"), _item(2, "other")])
            async with dispatching(settings, outbox):
                with trio.fail_after(20):
                    await good.wait_for(1)
                    await outbox.given_up.wait()  # retried until max_age_s, then given up
            failed = await outbox.failed()
    assert list(good.accepted) == ["msg_tls1"] and good.bad == 0
    (given_up,) = failed
    assert given_up.webhook_id == "msg_tls2"
    error = given_up.last_error or ""
    assert error.startswith("TLS: ") and "certificate verify failed" in error, error
    assert f"not valid for '{NAME}'" in error, error  # the reason names the name checked
    assert other.requests == 0  # refused in the handshake: nothing was sent to it


async def test_an_unknown_ca_is_refused_without_ca_file(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = _issue(ca, tmp_path / "srv", NAME)
    (tmp_path / "secret").write_text(SECRET)
    address = str(await resolve_allowed(NAME, 443, allow_private=True))
    async with open_receiver(SECRET, certfile=cert, keyfile=key, host=address) as receiver:
        port = urlsplit(receiver.url).port
        endpoint = WebhookEndpointConfig(
            name="r", url=f"https://{NAME}:{port}/hook", secret_file=str(tmp_path / "secret")
        )
        settings = WebhooksConfig(
            enabled=True, allow_private=True, endpoints=(endpoint,),
            base_delay_s=0.05, max_delay_s=0.1, max_age_s=0.3, breaker_failures=100,
        )  # fmt: skip
        async with WatchedOutbox(str(tmp_path / "outbox.sqlite3"), settings.max_age_s) as outbox:
            await outbox.add_many([_item(1, "r")])
            async with dispatching(settings, outbox):
                with trio.fail_after(20):
                    await outbox.given_up.wait()
            failed = await outbox.failed()
    assert "unable to get local issuer certificate" in (failed[0].last_error or "")
    assert receiver.requests == 0


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_a_ca_file_that_cannot_be_loaded_is_a_config_error(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=r"webhooks\.ca_file.*cannot load CA certificates"):
        tls_context(str(path))
