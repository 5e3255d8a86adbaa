"""``render_bytes``'s fast path against the stdlib generator it stands in for.

``render_bytes`` writes the simple messages itself (``_render_simple``) and hands
anything else to ``email``'s generator (``_render_stdlib``). For every message both
must give the same bytes, so each case is rendered both ways and compared, and
parsed back to check the headers and bodies.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain import mime
from actors.domain.edges import OutgoingEmail
from actors.domain.mime import EVENT_ID_HEADER, build_message, render_bytes
from tests.support.emails import outgoing_email

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HEADERS = ("From", "To", "Subject", "Message-ID", "Date", EVENT_ID_HEADER)


CODE_EMAIL = {
    "sender": "Mailactors <noreply@example.com>",
    "subject": "Your code is 123456",
    "text": "Hello Ana,\n\nyour code is 123456.\n",
    "html": "<p>Hello <b>Ana</b>, your code is 123456.</p>\n",
}


def outgoing(**changes: Any) -> OutgoingEmail:
    return outgoing_email(**(CODE_EMAIL | changes))


def simple(msg: EmailMessage, eight_bit: bool) -> bool:
    """True when render_bytes writes ``msg`` itself rather than with the generator."""
    return mime._render_simple(msg, eight_bit, [], 0)


def parsed(data: bytes) -> dict[str, Any]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    bodies = {}
    for kind in ("plain", "html"):
        part = msg.get_body((kind,))
        bodies[kind] = None if part is None else part.get_content().replace("\r\n", "\n")
    return {
        "headers": {name: str(msg[name]) for name in HEADERS},
        "bodies": bodies,
        "type": msg.get_content_type(),
        "defects": [type(d).__name__ for p in msg.walk() for d in p.defects],
    }


def as_sent(text: str) -> str:
    """A body as build_message sends it: "\n" line ends, one at the end."""
    lines = text.encode().splitlines()  # bytes: only CR, LF and CRLF end a line
    return (b"\n".join(lines) + b"\n").decode()


def check_wire_form(data: bytes) -> None:
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert max(map(len, data.split(b"\r\n"))) <= 998


def assert_same(out: OutgoingEmail, *, fast: bool | None = None) -> dict[str, Any]:
    """Both renderings of ``out`` agree; ``fast`` says which one render_bytes must use."""
    result: dict[str, Any] = {}
    for eight_bit in (True, False):
        msg = build_message(out, date=WHEN)
        if fast is not None and eight_bit:
            assert simple(msg, eight_bit) is fast
        data = render_bytes(msg, eight_bit=eight_bit)
        slow = mime._render_stdlib(msg, eight_bit)  # the same message: a boundary may be random
        assert data == slow
        assert parsed(data) == parsed(slow)
        check_wire_form(data)
        if not eight_bit and not mime.needs_smtputf8(msg):
            assert data.isascii()
        result = parsed(data)
    return result


CASES: dict[str, dict[str, Any]] = {
    "ascii text and html": {},
    "html None": {"html": None},
    "empty text": {"text": "", "html": None},
    "empty text and html": {"text": "", "html": ""},
    "no final newline": {"text": "Hello", "html": "<p>Hi</p>"},
    "CRLF and lone CR in the text": {"text": "a\r\nb\rc\n\nd\r\n", "html": "x\ry"},
    "From at a line start": {"text": "From here\n>From there\nFrom\n"},
    "tab and punctuation in the subject": {"subject": 'Re:\tcode (1) <x> "q" ;:,'},
    "non-ASCII body": {"text": "Olá José — ça va ?\n", "html": "<p>Olá</p>"},
    "non-ASCII html only": {"html": "<p>€ 5</p>"},
    "line of 998 octets": {"text": "x" * 998 + "\n", "html": None},
    "Subject line of 78 characters": {"subject": "s" * (78 - len("Subject: "))},
    # Subject and display names are encoded and folded by build_message itself
    # (the email package's folding lost spaces between encoded words), so they
    # take the fast path too.
    "non-ASCII subject": {"subject": "Bienvenue, José — ça va ?"},
    "long subject": {"subject": "word " * 30},
    "Subject line of 79 characters": {"subject": "s" * (79 - len("Subject: "))},
    "long plain subject folded at spaces": {"subject": "many words " * 20 + "end"},
    "non-ASCII display name": {"sender": "Zoë <noreply@example.com>"},
    "custom ASCII headers": {
        "headers": {"Reply-To": "help@example.com", "List-Unsubscribe": "<mailto:u@example.com>"}
    },
}

# Messages the fast path must leave to the generator.
FALLBACK_CASES: dict[str, dict[str, Any]] = {
    "internationalised address": {"recipient": "josé@exämple.org"},
    "long line": {"text": "x" * 2000 + "\n"},
    "long non-ASCII line": {"text": "é" * 600 + "\n", "html": None},
    "NUL in the body": {"text": "a\x00b\n"},
    "long custom header": {"headers": {"List-Unsubscribe": "<mailto:" + "u" * 90 + "@e.com>"}},
    "attachment": {"attachments": [("a.pdf", "application/pdf", b"%PDF\x00\xff" * 50)]},
    "text attachment, no html": {"html": None, "attachments": [("n.txt", "text/plain", b"hi")]},
}


@pytest.mark.parametrize("changes", CASES.values(), ids=list(CASES))
def test_fast_path_matches_the_generator(changes: dict[str, Any]) -> None:
    out = outgoing(**changes)
    result = assert_same(out, fast=True)
    assert result["headers"]["Subject"] == out.subject
    assert result["bodies"]["plain"] == as_sent(out.text)
    assert result["bodies"]["html"] == (None if out.html is None else as_sent(out.html))
    assert not result["defects"]


@pytest.mark.parametrize("changes", FALLBACK_CASES.values(), ids=list(FALLBACK_CASES))
def test_unusual_messages_go_to_the_generator(changes: dict[str, Any]) -> None:
    assert_same(outgoing(**changes), fast=False)


def test_parsed_fields_of_a_fast_message() -> None:
    msg = build_message(outgoing(), date=WHEN)
    assert simple(msg, True)
    result = parsed(render_bytes(msg))
    assert result == {
        "headers": {
            "From": "Mailactors <noreply@example.com>",
            "To": "ana@example.org",
            "Subject": "Your code is 123456",
            "Message-ID": "<ev-1@example.com>",
            "Date": "Fri, 02 Jan 2026 03:04:05 +0000",
            EVENT_ID_HEADER: "ev-1",
        },
        "bodies": {
            "plain": "Hello Ana,\n\nyour code is 123456.\n",
            "html": "<p>Hello <b>Ana</b>, your code is 123456.</p>\n",
        },
        "type": "multipart/alternative",
        "defects": [],
    }


def test_eight_bit_text_for_a_seven_bit_server_goes_to_the_generator() -> None:
    msg = build_message(outgoing(text="Olá\n"), date=WHEN)
    assert simple(msg, True) and not simple(msg, False)
    seven = render_bytes(msg, eight_bit=False)
    assert seven.isascii() and b"base64" in seven


def test_boundary_in_the_text_still_takes_the_fast_path() -> None:
    boundary = build_message(outgoing()).get_boundary()
    out = outgoing(text=f"--{boundary}\nnot a part\n")
    msg = build_message(out, date=WHEN)
    assert msg.get_boundary() != boundary
    assert assert_same(out, fast=True)["bodies"]["plain"] == out.text


def test_a_message_changed_after_building_is_rendered_as_it_is() -> None:
    """The fast path reads the message, so later changes reach the bytes (or the generator)."""
    msg = build_message(outgoing(), date=WHEN)
    msg.set_raw("X-Raw", "1")
    assert simple(msg, True)
    assert render_bytes(msg) == mime._render_stdlib(msg, True)
    assert b"\r\nX-Raw: 1\r\n" in render_bytes(msg)
    msg["X-Parsed"] = "2"  # a header object: the generator folds it
    assert not simple(msg, True)
    assert b"\r\nX-Parsed: 2\r\n" in render_bytes(msg)
    msg = build_message(outgoing(), date=WHEN)
    msg.set_boundary("other")
    assert not simple(msg, True)
    assert parsed(render_bytes(msg))["bodies"]["plain"] == outgoing().text
    msg = build_message(outgoing(), date=WHEN)
    msg.preamble = "This is a MIME message."
    assert not simple(msg, True)
    assert render_bytes(msg) == mime._render_stdlib(msg, True)


def test_default_date_is_now() -> None:
    """The Date header, formatted once a second, is the time of building."""
    before = datetime.now(UTC).replace(microsecond=0)
    date = parsed(render_bytes(build_message(outgoing())))["headers"]["Date"]
    after = datetime.now(UTC)
    assert before <= email.utils.parsedate_to_datetime(date) <= after
    assert email.utils.parsedate_to_datetime(mime._date_now()) >= before


# Any: hypothesis types these as Literal collections.
_SURROGATES: Any = ("Cs",)  # a lone surrogate cannot be encoded
_CONTROLS: Any = ("Cs", "Cc", "Zl", "Zp")  # and controls, line separators
_text = st.text(
    st.characters(blacklist_categories=_SURROGATES, blacklist_characters="\x00"), max_size=300
)
_header = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=90)


@settings(max_examples=300, deadline=None)
@given(
    subject=_header
    | st.text(st.characters(blacklist_categories=_CONTROLS), min_size=1, max_size=40),
    text=_text,
    html=st.none() | _text,
)
def test_any_text_renders_the_same_both_ways(subject: str, text: str, html: str | None) -> None:
    out = outgoing(subject=subject, text=text, html=html)
    for eight_bit in (True, False):
        msg = build_message(out, date=WHEN)
        assert render_bytes(msg, eight_bit=eight_bit) == mime._render_stdlib(msg, eight_bit)


@pytest.mark.parametrize(
    "value",
    [
        "user@example.com",
        "a.b+tag@sub.example.co.uk",
        "o'neil!#$%&*/=?^_`{|}~-@x-y.example",
        "a@b",
        "UPPER@Example.COM",
        "user42@123.example",
    ],
)
def test_bare_addresses_skip_the_parser_with_its_answer(value: str) -> None:
    assert mime._BARE_ADDRESS.fullmatch(value)
    assert mime._address_header(value) == mime._parsed_address_header(value) == ("", value)


@pytest.mark.parametrize(
    "value",
    [
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a@-example.com",
        "a@example-.com",
        "a@example..com",
        "Ada <ada@example.com>",
        '"a b"@example.com',
        "ä@example.com",
        "a@exämple.com",
        "a@example.com, b@example.com",
        "a@[127.0.0.1]",
    ],
)
def test_anything_else_goes_to_the_parser(value: str) -> None:
    assert not mime._BARE_ADDRESS.fullmatch(value)
    assert mime._address_header(value) == mime._parsed_address_header(value)
