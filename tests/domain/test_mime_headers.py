"""Header text survives the trip: what a decoder reads is exactly what was sent.

RFC 2047 section 6.2 makes decoders drop whitespace between two encoded words, so
a space the encoder leaves at a fold between them is lost. These tests parse the
bytes with the stdlib's modern parser (``policy.default``) and compare the text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from actors.domain import mime
from actors.domain.edges import OutgoingEmail
from actors.domain.mime import build_message, render_bytes
from tests.support.emails import outgoing_email

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def outgoing(**changes: Any) -> OutgoingEmail:
    return outgoing_email(**changes)


def sent(out: OutgoingEmail) -> list[tuple[bytes, EmailMessage]]:
    """Both wire forms (8-bit and 7-bit servers), checked, and parsed back."""
    result = []
    for eight_bit in (True, False):
        msg = build_message(out, date=WHEN)
        data = render_bytes(msg, eight_bit=eight_bit)
        assert data == mime._render_stdlib(msg, eight_bit)  # fast and slow path agree
        lines = data.split(b"\r\n")
        assert b"\n" not in data.replace(b"\r\n", b"")  # no bare LF
        assert b"\r" not in data.replace(b"\r\n", b"")
        assert max(map(len, lines)) <= 998
        head = data.split(b"\r\n\r\n", 1)[0]
        parsed = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(parsed, EmailMessage)
        result.append((head, parsed))
    return result


# Any Unicode except what header validation refuses (line breaks, controls) and
# lone surrogates, which cannot be encoded at all.
_CATEGORIES: Any = ("Cs", "Cc", "Zl", "Zp")
_unicode = st.characters(blacklist_categories=_CATEGORIES)
# Words of mixed scripts joined by single spaces, the shape that lost spaces.
_words = st.lists(
    st.text(_unicode, min_size=1, max_size=12).filter(lambda w: not w.isspace()),
    min_size=1,
    max_size=30,
).map(" ".join)
_any_text = st.text(_unicode, min_size=1, max_size=254)

# Each lost spaces before the fix (1, 1 and 2), as the stdlib's SMTP policy folds them.
LOST_SPACES = {
    "the issue's welcome subject": "Welcome to 山田 クラウド サービス, 山田 太郎!",
    "Cyrillic, 68 characters": (
        "снова Добро пожаловать писем нашу в доставки Сергеевич Александр вас"
    ),
    "Latin, CJK and emoji, 254 characters": (
        "✨ Straße Straße naïve 太郎 東京 📅 Welcome 太郎 🚀 東京 東京 Welcome naïve naïve 大阪 "
        "サービス naïve Welcome 東京 🚀 Welcome サービス Welcome 📅 📅 naïve 東京 naïve ✨ 🚀 太郎 "
        "山田 ✨ Straße 太郎 🎉 naïve bienvenue naïve 山田 Welcome ✨ 東京 Straße サービス naïve "
        "naïve 大阪 📅 📅 山田 🎉 Straße Welcome 📅 Str"
    ),
}


def test_subjects_that_lost_spaces_keep_them() -> None:
    for subject in LOST_SPACES.values():
        for head, parsed in sent(outgoing(subject=subject)):
            assert str(parsed["Subject"]) == subject
            assert all(len(line) <= 78 for line in head.split(b"\r\n"))


def test_plain_ascii_subjects_stay_readable_and_fold_at_spaces() -> None:
    subject = "Your order 12345 has shipped and will arrive on Tuesday between 9 and 5 pm"
    (head, parsed), _ = sent(outgoing(subject=subject))
    assert b"=?" not in head
    assert (
        b"Subject: Your order 12345 has shipped and will arrive on Tuesday between 9 and\r\n 5 pm"
        in head
    )
    assert str(parsed["Subject"]) == subject


def test_text_that_looks_encoded_is_encoded() -> None:
    """A subject that reads as an encoded word would be decoded by the receiver."""
    for subject in ("=?utf-8?q?hi?=", " leading space", "trailing space ", "a\ttab"):
        for _, parsed in sent(outgoing(subject=subject)):
            assert str(parsed["Subject"]) == subject


@settings(max_examples=300, deadline=None)
@given(subject=_words | _any_text)
@example(subject=LOST_SPACES["the issue's welcome subject"])
def test_any_subject_survives(subject: str) -> None:
    for _, parsed in sent(outgoing(subject=subject)):
        assert str(parsed["Subject"]) == subject


def _no_space_runs(name: str) -> bool:
    # Python's email collapses runs of spaces and tabs inside an encoded word in a
    # phrase to one space (its tokenizer, not the bytes): out of reach of the encoder.
    # It also takes other white space (NBSP, ...) for a space there.
    return bool(name.strip()) and (
        name.isascii() or re.fullmatch(r"(?:[^\s]+ )*[^\s]+", name) is not None
    )


@settings(max_examples=300, deadline=None)
@given(name=(_words | st.text(_unicode, min_size=1, max_size=80)).filter(_no_space_runs))
@example(name="山田 クラウド サービス サポート チーム の 代表 アドレス です")
@example(name="=??Q??=")  # quoted, it is literal text, not an encoded word
@example(name="=?utf-8?q?Zo=C3=AB?=")
def test_any_display_name_survives(name: str) -> None:
    for address in ("noreply@example.com", "josé@exämple.org"):
        quoted = msgspec.json.encode(name).decode()  # a quoted-string: any text
        for _, parsed in sent(outgoing(sender=f"{quoted} <{address}>")):
            (got,) = parsed["From"].addresses
            assert got.display_name == name


@settings(max_examples=200, deadline=None)
@given(filename=(_words | _any_text).filter(lambda n: n.strip() == n and n.strip()))
@example(filename="=?utf-8?q?report?=.pdf")  # quoted, it reads as an encoded word
@example(filename="レポート 2026 年 第一 四半期 の 売上 報告 書 最終 版 です.pdf")
def test_any_attachment_filename_survives(filename: str) -> None:
    out = outgoing(attachments=[(filename, "application/pdf", b"%PDF")])
    for _, parsed in sent(out):
        (attachment,) = parsed.iter_attachments()
        assert attachment.get_filename() == filename


def test_a_non_ascii_display_name_does_not_need_smtputf8() -> None:
    """Only a non-ASCII address needs SMTPUTF8; the name is encoded words."""
    msg = build_message(outgoing(sender="Zoë Müller <noreply@example.com>"), date=WHEN)
    assert not mime.needs_smtputf8(msg)
    assert render_bytes(msg).isascii()
    assert mime.needs_smtputf8(build_message(outgoing(recipient="josé@exämple.org")))


def test_usual_headers_are_written_as_before() -> None:
    (head, _), _ = sent(outgoing(sender="Mailactors <noreply@example.com>"))
    assert head.startswith(
        b"From: Mailactors <noreply@example.com>\r\nTo: ana@example.org\r\nSubject: Hello\r\n"
    )


def test_a_display_name_given_as_encoded_words_is_decoded_and_encoded_again() -> None:
    out = outgoing(sender="=?utf-8?q?Zo=C3=AB_M=C3=BCller?= <noreply@example.com>")
    for _, parsed in sent(out):
        assert parsed["From"].addresses[0].display_name == "Zoë Müller"
