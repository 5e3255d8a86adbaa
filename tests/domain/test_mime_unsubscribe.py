"""List-Unsubscribe from OutgoingEmail.list_unsubscribe (RFC 8058): both URLs, one fold."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from actors.domain.edges import OutgoingEmail
from actors.domain.mime import build_message, render_bytes

URL = "https://mail.example.com/unsubscribe/" + "T" * 60
MAILTO = "mailto:unsubscribe+" + "T" * 60 + "@example.com"


def outgoing(**changes: object) -> OutgoingEmail:
    fields: dict[str, object] = {
        "event_id": "e-1", "sender": "news@example.com", "recipient": "ada@example.com",
        "subject": "News", "text": "Hello\n", "message_id": "<e-1@example.com>",
        "list_unsubscribe": (URL, MAILTO), **changes,
    }  # fmt: skip
    return OutgoingEmail(**fields)  # type: ignore[arg-type]


def test_both_headers_written_whole_and_read_back() -> None:
    msg = build_message(outgoing())
    wire = render_bytes(msg)
    assert wire == msg.as_bytes()  # the fast path writes what the generator writes
    assert f"List-Unsubscribe: <{URL}>,\r\n <{MAILTO}>\r\n".encode() in wire
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in wire
    parsed = message_from_bytes(wire, policy=policy.default)
    assert str(parsed["List-Unsubscribe"]) == f"<{URL}>, <{MAILTO}>"


def test_none_without_the_field_and_no_second_one_from_custom_headers() -> None:
    assert b"List-Unsubscribe" not in render_bytes(build_message(outgoing(list_unsubscribe=None)))
    with pytest.raises(ValueError, match="List-Unsubscribe"):
        build_message(outgoing(headers={"List-Unsubscribe": "<mailto:x@example.com>"}))
    with pytest.raises(ValueError, match="line break"):
        build_message(outgoing(list_unsubscribe=(URL + "\r\nBcc: x@example.com", MAILTO)))
