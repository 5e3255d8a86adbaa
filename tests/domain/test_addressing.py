"""actors.domain.addressing: the sender policy, copies, headers, tags, metadata, send_at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from actors.domain.addressing import (
    MAX_COPIES,
    MAX_TAGS,
    SenderPolicy,
    check_addressing,
    check_send_at,
    format_sender,
)
from actors.domain.validation import InvalidField
from tests.support.security import HOSTILE_STRINGS

POLICY = SenderPolicy.build(
    "Mail <mailactors@localhost>",
    ["example.com", "@example.net", "alerts@example.org"],
    {"billing": "Billing <billing@example.io>"},
)


def check(**fields: Any) -> Any:
    fields.setdefault("category", "transactional")
    given = SimpleNamespace(**fields)  # a request with these fields, the others unset
    return check_addressing(given, policy=POLICY, recipient="ada@example.com")


def test_senders_are_addresses_or_whole_domains() -> None:
    assert check(from_address="any@EXAMPLE.com").from_address == "any@example.com"
    assert check(from_address="x@example.net").from_address == "x@example.net"
    assert check(from_address="alerts@example.org").from_address == "alerts@example.org"
    for bad in ("other@example.org", "x@sub.example.com", "x@example.com.evil.io"):
        with pytest.raises(InvalidField) as info:
            check(from_address=bad)
        assert info.value.field == "from_address"


def test_category_default_sender_and_a_name_without_an_address() -> None:
    got = check(category="billing")
    assert (got.from_address, got.from_name) == ("billing@example.io", "Billing")
    assert check(category="billing", from_name="Accounts").from_name == "Accounts"
    assert check().from_address is None  # the provider's sender, chosen by the email server
    with pytest.raises(InvalidField, match="^from_name: needs from_address"):
        check(from_name="Nobody")


def test_copies_are_checked_deduplicated_and_bounded() -> None:
    got = check(cc=["a@x.org", "A@x.org", "ada@example.com"], bcc=["a@x.org", "b@x.org"])
    assert got.cc == ["a@x.org"] and got.bcc == ["b@x.org"]
    with pytest.raises(InvalidField, match=r"^cc: cc and bcc hold more than"):
        check(cc=[f"u{i}@x.org" for i in range(MAX_COPIES)], bcc=["extra@x.org"])
    with pytest.raises(InvalidField, match=r"^bcc: must be a list"):
        check(bcc="b@x.org")


@pytest.mark.parametrize("name", ["From", "to", "CC", "bcc", "Subject", "Date", "Message-ID",
                                  "MIME-Version", "Content-Type", "Return-Path", "Sender",
                                  "DKIM-Signature", "List-Unsubscribe", "Reply-To", "Received",
                                  "X-Mailactors-Event-Id", "x-mailactors-anything"])
def test_system_headers_are_refused_naming_the_header(name: str) -> None:
    with pytest.raises(InvalidField) as info:
        check(headers={name: "v"})
    assert info.value.field == f"headers[{name!r}]"


def test_allowed_headers_and_injections() -> None:
    ok = {"X-A": "1", "list-id": "<l.example.com>", "References": "<a@b> <c@d>"}
    assert check(headers=ok).headers == ok
    with pytest.raises(InvalidField, match="given twice"):
        check(headers={"X-A": "1", "x-a": "2"})
    for value in ("a\r\nBcc: v@x.org", "a\nb", "a\rb", "a\x00b", "a\u2028b", "\x85"):
        with pytest.raises(InvalidField) as info:
            check(headers={"X-A": value})
        assert info.value.field == "headers['X-A']"


def test_tags_and_metadata() -> None:
    assert check(tags=["a", "b:c", "a"]).tags == ["a", "b:c"]
    with pytest.raises(InvalidField, match=r"^tags: 11 tags"):
        check(tags=[f"t{i}" for i in range(MAX_TAGS + 1)])
    assert check(metadata={"order-id": "42"}).metadata == {"order-id": "42"}
    with pytest.raises(InvalidField, match=r"^metadata\['k'\]: is 257 characters"):
        check(metadata={"k": "x" * 257})


def test_hostile_strings_are_refused_naming_their_field_or_kept_as_text() -> None:
    """Whatever a caller sends, the answer is a result or InvalidField naming the field."""
    for text in HOSTILE_STRINGS:
        for field, fields in (
            ("from_address", {"from_address": text}),
            ("reply_to", {"reply_to": text}),
            ("cc[0]", {"cc": [text]}),
            ("bcc[0]", {"bcc": [text]}),
            ("tags[0]", {"tags": [text]}),
            ("headers['X-A']", {"headers": {"X-A": text}}),
            ("metadata['k']", {"metadata": {"k": text}}),
            ("send_at", None),
        ):
            try:
                if fields is None:
                    check_send_at(text, 3600)
                else:
                    got = check(**fields)
                    assert "\r" not in repr(got.headers.values()) and "\n" not in str(got)
            except InvalidField as exc:
                assert exc.field == field, (text, exc)


def test_send_at() -> None:
    now = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)
    assert check_send_at("2026-12-01T19:30:00+01:00", 7200, now) == now + timedelta(hours=1.5)
    assert check_send_at("2026-12-01T17:00:00.5z", 60, now) == now + timedelta(seconds=0.5)
    assert check_send_at("2026-12-01T16:00:00Z", 60, now) is None  # past: now
    assert check_send_at(None, 60, now) is None
    for bad in ("2026-12-01T18:00:00", "2026-12-01", "soon", "2026-13-01T00:00:00Z"):
        with pytest.raises(InvalidField, match="^send_at: "):
            check_send_at(bad, 86400, now)
    with pytest.raises(InvalidField, match=r"^send_at: is more than 60 s ahead"):
        check_send_at("2026-12-01T17:02:00Z", 60, now)


def test_format_sender() -> None:
    assert format_sender("a@x.org", None) == "a@x.org"
    assert format_sender("a@x.org", "Ada") == "Ada <a@x.org>"
    assert format_sender("a@x.org", "Doe, Jane") == '"Doe, Jane" <a@x.org>'
