"""One-click unsubscribe: tokens, and the whole loop through a running embedded system."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import msgspec
import pytest

from actors.domain.schema import Status
from actors.email_server.suppression import SuppressionList
from actors.profiles.trees import unsubscribe_mail
from actors.testing.fakesmtp import CapturingServer, free_port
from actors.webhooks import TokenError, UnsubscribeMail, UnsubscribeTokens
from config import UnsubscribeConfig
from tests.support.embedded import embedded_config, request, running
from tests.support.feedback import DOMAIN, RecordingSink, bounces_config, running_inbound, send

KEY = "unsubscribe-key-for-tests"
CATEGORIES = ("newsletter", "promotions")
FORM = "application/x-www-form-urlencoded"


def test_a_token_names_its_recipient_and_category_and_nothing_else_passes() -> None:
    tokens = UnsubscribeTokens(KEY, CATEGORIES, ttl_s=3600, clock=lambda: 1_000_000.0)
    token = tokens.make("ada@example.com", "newsletter")
    assert tokens.check(token) == ("ada@example.com", "newsletter")
    assert len(f"unsubscribe+{token}") <= 64  # fits an RFC 5321 local part
    raw = bytearray(token.encode())
    raw[10] = ord("A") if raw[10] != ord("A") else ord("B")
    cases = {
        bytes(raw).decode(): 403,  # one character changed: forged
        UnsubscribeTokens("other key", CATEGORIES, 3600).make("ada@example.com", "newsletter"): 403,
        tokens.make("ada@example.com", "transactional"): 403,  # not an unsubscribable category
        "not base64 at all!": 400,
        "": 400,
        "QUJD": 400,  # too short to hold anything
        "A" * 5000: 400,
    }
    for bad, status in cases.items():
        with pytest.raises(TokenError) as info:
            tokens.check(bad)
        assert info.value.status == status, bad
    later = UnsubscribeTokens(KEY, CATEGORIES, ttl_s=3600, clock=lambda: 1_000_000.0 + 3601)
    with pytest.raises(TokenError, match="expired") as info:
        later.check(token)
    assert info.value.status == 410


async def test_the_mailto_handler_suppresses_the_tokens_recipient(tmp_path: Path) -> None:
    key_file = tmp_path / "unsubscribe.key"
    key_file.write_text(KEY + "\n")
    config = embedded_config(
        tmp_path, unsubscribe={"categories": list(CATEGORIES), "secret_file": str(key_file)}
    )
    handler = unsubscribe_mail(config)  # what the inbound SMTP endpoint calls
    assert isinstance(handler, UnsubscribeMail)
    token = UnsubscribeTokens(KEY, CATEGORIES, ttl_s=3600).make("bob@example.com", "promotions")
    assert await handler(f"unsubscribe+{token}") == ("bob@example.com", "promotions", True)
    assert await handler(token) == ("bob@example.com", "promotions", False)  # idempotent
    with pytest.raises(TokenError):
        await handler(token[:-3] + "xyz")
    async with SuppressionList(config.email_server.idempotency_path) as suppression:
        entry = suppression.lookup("bob@example.com", "promotions")
        assert entry is not None and entry.source == "unsubscribe"
        assert suppression.lookup("bob@example.com", "newsletter") is None
        assert len(await suppression.entries()) == 1
    assert unsubscribe_mail(embedded_config(tmp_path)) is None  # no category: no handler


async def test_the_mailto_form_through_the_inbound_smtp_endpoint(tmp_path: Path) -> None:
    key_file = tmp_path / "unsubscribe.key"
    key_file.write_text(KEY + "\n")
    unsubscribe = {"categories": list(CATEGORIES), "secret_file": str(key_file)}
    config = bounces_config(tmp_path)
    config = msgspec.structs.replace(
        config,
        unsubscribe=UnsubscribeConfig(**unsubscribe),  # type: ignore[arg-type]
        email_server=msgspec.structs.replace(
            config.email_server, idempotency_path=str(tmp_path / "sent.sqlite3")
        ),
    )
    handlers = {"unsubscribe": unsubscribe_mail(config)}
    make = UnsubscribeTokens(KEY, CATEGORIES, ttl_s=3600).make
    good = make("carol@example.com", "newsletter")
    async with running_inbound(config, RecordingSink(), handlers) as (_, port):
        mail = b"Subject: unsubscribe\r\n\r\n"
        forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
        assert (await send(port, f"unsubscribe+{forged}@{DOMAIN}", mail))[0] == 550
        other = make("carol@example.com", "news")  # not an unsubscribable category
        assert (await send(port, f"unsubscribe+{other}@{DOMAIN}", mail))[0] == 550
        stale = UnsubscribeTokens(KEY, CATEGORIES, ttl_s=-7200).make("carol@example.com",
                                                                     "newsletter")  # fmt: skip
        assert (await send(port, f"unsubscribe+{stale}@{DOMAIN}", mail))[0] == 551
        reply = await send(port, f"unsubscribe+{good}@{DOMAIN}", mail, sender="carol@example.com")
        assert reply == (250, "2.0.0 Unsubscribed")
        again = await send(port, f"unsubscribe+{good}@{DOMAIN}", mail, sender="carol@example.com")
        assert again == (250, "2.0.0 Already unsubscribed")
    async with SuppressionList(config.email_server.idempotency_path) as suppression:
        entries = await suppression.entries()
    assert [(e.address, e.category, e.source) for e in entries] == [
        ("carol@example.com", "newsletter", "unsubscribe")
    ]


async def test_the_mailto_in_the_header_unsubscribes_through_the_systems_endpoint(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "unsubscribe.key"
    key_file.write_text(KEY + "\n")
    with CapturingServer() as smtp:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            bounces=msgspec.structs.asdict(bounces_config(tmp_path).bounces),
            unsubscribe={"categories": list(CATEGORIES), "secret_file": str(key_file)},
            http={"enabled": True, "host": "127.0.0.1", "port": free_port()},
        )
        async with running(config) as app:
            listening = app.system.snapshot().by_path()["inbound-smtp"].extra["listening"]
            port = int(listening[0].rpartition(":")[2])  # type: ignore[index]
            first = (await app.request(request(to="dan@example.com", category="news"))).event_id
            await app.wait_terminal(first)  # "news" is not unsubscribable: no header
            promo = await app.request(request(to="dan@example.com", category="promotions"))
            assert (await app.wait_terminal(promo.event_id)).status is Status.SENT
            plain, with_links = (m.data for m in smtp.messages())
            assert b"List-Unsubscribe" not in plain
            _, mailto, _ = _link(with_links)
            address = mailto.removeprefix("mailto:")
            assert address.endswith(f"@{DOMAIN}")  # where the inbound endpoint takes mail
            code, text = await send(port, address, b"Subject: unsubscribe\r\n\r\n",
                                    sender="dan@example.com")  # fmt: skip
            assert (code, text) == (250, "2.0.0 Unsubscribed")
            again = await app.request(request(to="dan@example.com", category="promotions"))
            assert (await app.wait_terminal(again.event_id)).status is Status.SUPPRESSED
            other = await app.request(request(to="dan@example.com", category="newsletter"))
            assert (await app.wait_terminal(other.event_id)).status is Status.SENT


def _link(message: bytes) -> tuple[str, str, str]:
    parsed = message_from_bytes(message, policy=policy.default)
    header = str(parsed["List-Unsubscribe"])
    match = re.fullmatch(r"<(http[^>]+)>, <(mailto:[^>]+)>", header)
    assert match, header
    return match.group(1), match.group(2), str(parsed["List-Unsubscribe-Post"])


async def test_one_click_through_the_running_system(tmp_path: Path) -> None:
    key_file = tmp_path / "unsubscribe.key"
    key_file.write_text(KEY + "\n")
    port = free_port()
    with CapturingServer() as smtp:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            http={"enabled": True, "host": "127.0.0.1", "port": port},
            unsubscribe={"categories": list(CATEGORIES), "secret_file": str(key_file)},
        )
        async with running(config) as app, httpx.AsyncClient() as client:

            async def send(to: str, category: str) -> Status:
                reply = await app.request(request(to=to, category=category))
                return (await app.wait_terminal(reply.event_id)).status

            assert await send("ada@example.com", "newsletter") is Status.SENT
            assert await send("ada@example.com", "transactional") is Status.SENT
            news, receipt = (m.data for m in smtp.messages())
            assert b"List-Unsubscribe" not in receipt  # transactional: no header
            url, mailto, post = _link(news)
            assert url.startswith(f"http://127.0.0.1:{port}/unsubscribe/")
            assert mailto.startswith("mailto:unsubscribe+") and mailto.endswith("@mailactors.test")
            assert post == "List-Unsubscribe=One-Click"

            page = await client.get(url)  # a mail scanner following the link changes nothing
            assert page.status_code == 200 and 'method="post"' in page.text
            async with SuppressionList(config.email_server.idempotency_path) as suppression:
                assert await suppression.entries() == []

            # Hostile requests: none of them unsubscribes anyone.
            token = url.rsplit("/", 1)[1]
            one_click = b"List-Unsubscribe=One-Click"

            async def answer(t: str, body: bytes = one_click, kind: str = FORM) -> int:
                reply = await client.post(
                    url.replace(token, t), content=body, headers={"content-type": kind}
                )
                return reply.status_code

            forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
            assert await answer(forged) == 403
            make = UnsubscribeTokens(KEY, CATEGORIES, 3600).make
            assert await answer(make("ada@example.com", "transactional")) == 403
            stale = UnsubscribeTokens(KEY, CATEGORIES, -7200).make
            assert await answer(stale("ada@example.com", "newsletter")) == 410
            assert await answer(token, b"x" * 5000) == 413
            assert await answer(token, b"List-Unsubscribe=Maybe") == 400
            assert await answer(token, one_click, "text/plain") == 400
            assert await answer("%00%01") == 400
            async with SuppressionList(config.email_server.idempotency_path) as suppression:
                assert await suppression.entries() == []

            # The real thing, as a mail client sends it; twice (a retrying client) is fine.
            for _ in range(2):
                done = await client.post(url, data={"List-Unsubscribe": "One-Click"})
                assert done.status_code == 200 and "no more emails" in done.text

            assert await send("ada@example.com", "newsletter") is Status.SUPPRESSED
            assert await send("ada@example.com", "transactional") is Status.SENT
            assert await send("ada@example.com", "promotions") is Status.SENT
            assert await send("bob@example.com", "newsletter") is Status.SENT
            async with SuppressionList(config.email_server.idempotency_path) as suppression:
                entries = await suppression.entries()
        assert [(e.address, e.category, e.source) for e in entries] == [
            ("ada@example.com", "newsletter", "unsubscribe")
        ]
