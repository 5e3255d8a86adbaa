"""Turning an :class:`~actors.domain.edges.OutgoingEmail` into an RFC 5322 message.

Every provider sends the same bytes, so the message is built in one place, with
the standard library's ``email`` package (``policy.SMTP``: CRLF line ends, RFC
2047 encoded words for non-ASCII headers, folded long lines).

Subject, display names and other text headers are encoded here, not by the
``email`` package: when it folds a long non-ASCII value it puts the fold between
two encoded words where the text had a space, and RFC 2047 section 6.2 tells
every decoder to drop whitespace between encoded words, so the space was lost.
:func:`encode_text` encodes the spaces inside the words instead.

Header values are validated long before they get here, but this is the last
point before the wire, so it refuses CR, LF and NUL in any header value itself
(``ValueError`` naming the header) rather than trust that: a line break in a
header is a header injection, and the ``email`` package would only fold it.
"""

from __future__ import annotations

import base64
import functools
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from email import errors, headerregistry
from email.message import EmailMessage, MIMEPart
from email.policy import EmailPolicy
from email.utils import format_datetime
from typing import Any, TypeVar

import msgspec

from actors.domain.edges import OutgoingEmail
from actors.domain.validation import ascii_address

__all__ = [
    "EVENT_ID_HEADER",
    "RESERVED_HEADERS",
    "ascii_email",
    "build_message",
    "encode_address",
    "encode_text",
    "final_bytes",
    "message_id_for",
    "needs_smtputf8",
    "render_bytes",
]

EVENT_ID_HEADER = "X-Mailactors-Event-Id"

# Headers that build_message writes itself; OutgoingEmail.headers may not set them,
# since a second From or Content-Type would make the message ambiguous.
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        EVENT_ID_HEADER,
    )
)

# CR, LF, NUL, and what else the email package takes for a line end (str.splitlines):
# VT, FF, FS, GS, RS, NEL, U+2028, U+2029. Any of them would start a new header line.
_BREAKERS = re.compile("[\r\n\x00\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# RFC 5322 section 2.2: printable US-ASCII except colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_MAX_RAW = 78  # policy.SMTP.max_line_length
_MAX_BODY_LINE = 998  # RFC 5322 section 2.1.1, for 7bit and 8bit bodies
# RFC 2045 token: a MIME type or subtype.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")


class _CachingHeaderRegistry(headerregistry.HeaderRegistry):
    """A HeaderRegistry that builds each header class once.

    The stock registry creates a new class with ``type()`` on every lookup, which
    was a third of the cost of building a message; caching it changes nothing else.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[headerregistry.BaseHeader]] = {}

    def map_to_type(self, name: str, cls: type[headerregistry.BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> type[headerregistry.BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


class _Policy(EmailPolicy):
    """``policy.SMTP`` that parses a stored header value once, not on every read.

    Header values are kept as plain strings (cheap to fold), and the generator
    reads Content-Type several times per part while flattening; each read
    parsed it again. Header objects are immutable, so a parse can be shared.
    """

    def header_fetch_parse(self, name: str, value: str) -> str:
        if hasattr(value, "name"):
            return value
        return _parse_header(self.header_factory, name, value)


@functools.lru_cache(maxsize=1024)
def _parse_header(factory: Any, name: str, value: str) -> str:
    return factory(name, "".join(value.splitlines()))  # type: ignore[no-any-return]


_Part = TypeVar("_Part", bound=MIMEPart)

# refold_source="none": a value set raw (already encoded and folded by
# encode_text / encode_address) is written exactly as it is, never re-folded
# by the email package, so both renderings write the same bytes.
_SMTP = _Policy(
    linesep="\r\n", header_factory=_CachingHeaderRegistry(), refold_source="none"
)
# For internationalised addresses (RFC 6531/6532): headers stay UTF-8, which
# needs a server that offers SMTPUTF8; encoded words are not allowed in addresses.
_SMTPUTF8 = _SMTP.clone(utf8=True)


def message_id_for(event_id: str, domain: str) -> str:
    """The Message-ID of the email for ``event_id``: ``<event_id@domain>``.

    Derived from the eventId, so every attempt at one email carries the same
    Message-ID and a receiving system can recognise a repeat.
    """
    _check_value("Message-ID", event_id)
    _check_value("Message-ID", domain)
    if not event_id or not domain or any(c in event_id + domain for c in "<>@ \t"):
        raise ValueError(f"Message-ID: cannot build one from {event_id!r} and {domain!r}")
    return f"<{event_id}@{domain}>"


def _check_value(header: str, value: str) -> str:
    if _BREAKERS.search(value):
        raise ValueError(
            f"{header}: header value must not contain a line break (CR, LF, ...) or NUL"
        )
    return value


def _set_header(msg: EmailMessage, name: str, value: str) -> None:
    """Add a header, skipping the header parser when the value needs no encoding.

    A short ASCII value is written as it is (the parser would only re-fold it to
    the same text); anything else goes through the policy, which encodes
    non-ASCII text as RFC 2047 words and folds long lines.
    """
    _check_value(name, value)
    if value.isascii() and len(name) + len(value) + 2 <= _MAX_RAW:
        msg.set_raw(name, value)
    else:
        msg[name] = value


# Printable ASCII that no decoder changes: no "=?" (it could read as an encoded
# word), no tab, no space at either end (header parsers strip it).
_PLAIN_TEXT = re.compile(r"(?!.*=\?)[!-~](?:[ -~]*[!-~])?")
# A display name written as it is: atext words (RFC 5322) joined by single spaces,
# without "=" and "?" (no encoded-word look-alike).
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/^_`{|}~]+(?: [A-Za-z0-9!#$%&'*+\-/^_`{|}~]+)*")
_EW_MAX = 75  # RFC 2047 section 2: an encoded word is at most 75 characters
_EW_OVERHEAD = len("=?utf-8?b??=")


def encode_text(value: str, used: int) -> str:
    """``value`` as a header value that every RFC 2047 decoder reads back exactly.

    ``used`` is how much of the first line is taken (``len("Subject: ")``).
    Plain printable ASCII is kept readable, folded at its spaces (unfolding
    gives the same text back); anything else is a run of base64 encoded words,
    one per line, with every space of the text inside them. The fold between
    two encoded words is then the only whitespace there, and dropping it, as
    decoders must, gives back exactly the text. Lines stay within 78 characters.
    """
    if _PLAIN_TEXT.fullmatch(value):
        if used + len(value) <= _MAX_RAW:
            return value
        folded = _fold_at_spaces(value, used)
        if folded is not None:
            return folded
    return _encoded_words(value, used)


def _encoded_words(value: str, used: int) -> str:
    """Base64 encoded words, one per line, each holding whole characters."""
    words = []
    budget = _MAX_RAW - used
    chunk: list[bytes] = []
    size = 0
    for char in value:
        data = char.encode("utf-8")
        # base64 of n bytes is 4*ceil(n/3) characters.
        if chunk and _EW_OVERHEAD + 4 * -(-(size + len(data)) // 3) > budget:
            words.append(_encoded_word(b"".join(chunk)))
            chunk, size, budget = [], 0, min(_EW_MAX, _MAX_RAW - 1)
        chunk.append(data)
        size += len(data)
    words.append(_encoded_word(b"".join(chunk)))
    return "\r\n ".join(words)


def _encoded_word(data: bytes) -> str:
    return "=?utf-8?b?" + base64.b64encode(data).decode("ascii") + "?="


def _fold_at_spaces(value: str, used: int) -> str | None:
    """Fold before spaces so that lines fit in 78 characters; None if a word is too long."""
    lines: list[str] = []
    line = ""
    room = _MAX_RAW - used
    for i, word in enumerate(value.split(" ")):
        piece = word if i == 0 else " " + word
        if len(line) + len(piece) <= room:
            line += piece
            continue
        if i == 0 or not line.strip(" ") or len(piece) > _MAX_RAW:
            return None  # a word longer than a line, or a fold that would leave a blank line
        lines.append(line)
        line, room = piece, _MAX_RAW
    lines.append(line)
    return "\r\n".join(lines)


def encode_address(value: str, used: int) -> str | None:
    """A one-address header value (``Name <addr>`` or ``addr``) with its display name
    encoded as :func:`encode_text` does; None if ``value`` is not one address.

    The address itself is written as it is (UTF-8 in an SMTPUTF8 message).
    """
    parsed = _address_header(value)  # decodes a name given as encoded words
    if parsed is None:
        return None
    name, addr_spec = parsed
    if not name:
        return addr_spec
    if _PLAIN_PHRASE.fullmatch(name) and used + len(name) + len(addr_spec) + 3 <= _MAX_RAW:
        return f"{name} <{addr_spec}>"
    if _PLAIN_TEXT.fullmatch(name.strip(" ") or "=?"):
        # Printable ASCII: a quoted string keeps every space and character.
        phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        # One encoded word, even past RFC 2047's 75 characters: between two
        # encoded words in a phrase RFC decoders drop the space and Python's
        # email keeps it, so any split changes the name for one of them.
        phrase = _encoded_word(name.encode("utf-8"))
        if len(phrase) >= _MAX_BODY_LINE:
            # Longer than validation allows (addressing.MAX_NAME_OCTETS): split, as RFC 2047
            # decoders read it back, rather than write a line over 998 octets.
            phrase = _encoded_words(name, used)
    if used + len(phrase) > _MAX_RAW:
        phrase = "\r\n " + phrase
        used = 1
    if used + len(phrase.lstrip()) + len(addr_spec) + 3 <= _MAX_RAW:
        return f"{phrase} <{addr_spec}>".lstrip("\r\n ")
    return f"{phrase}\r\n <{addr_spec}>".lstrip("\r\n ")


# ``"quoted name" <addr>``: RFC 2047 section 5 does not decode encoded words inside a
# quoted-string, so its text is taken literally (Python's parser would decode it).
_QUOTED_NAME = re.compile(r'[ \t]*"((?:[^"\\\r\n]|\\[^\r\n])*)"[ \t]*(<[^<>"]*>)[ \t]*')
_QUOTED_PAIR = re.compile(r"\\(.)")


# A bare dot-atom addr-spec (``user@example.com``), what almost every recipient is: the
# header parser gives ("", value) for it, at ~30 us an address (a tenth of building a message).
_BARE_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


def _address_header(value: str) -> tuple[str, str] | None:
    if _BARE_ADDRESS.fullmatch(value):
        return "", value
    return _parsed_address_header(value)


@functools.lru_cache(maxsize=256)
def _parsed_address_header(value: str) -> tuple[str, str] | None:
    quoted = _QUOTED_NAME.fullmatch(value)
    if quoted is not None:
        parsed = _address_header(quoted.group(2))
        if parsed is None or parsed[0]:
            return None
        return _QUOTED_PAIR.sub(r"\1", quoted.group(1)), parsed[1]
    try:
        header = _SMTP.header_factory("To", value)
        addresses = header.addresses
    except Exception:  # the parser raises various errors on garbage; fall back
        return None
    # A non-ASCII local part is a "defect" only without SMTPUTF8, which it gets.
    defects = [d for d in header.defects if not isinstance(d, errors.NonASCIILocalPartDefect)]
    if len(addresses) != 1 or defects:
        return None
    address = addresses[0]
    addr_spec: str = address.addr_spec
    if not address.username or "\r" in addr_spec or "\n" in addr_spec:
        return None
    return address.display_name, addr_spec


def _set_address(msg: EmailMessage, name: str, value: str, encoded: str | None) -> None:
    if encoded is not None:
        msg.set_raw(name, encoded)
    else:  # not one plain address (a group, a list...): as the email package writes it
        _set_header(msg, name, value)


def _address_list(name: str, values: list[str]) -> str:
    """A header value of ``values``, one address a line; "" for none."""
    parts: list[str] = []
    for value in values:
        encoded = encode_address(_check_value(name, value), len(name) + 2 if not parts else 1)
        if encoded is None:
            raise ValueError(f"{name}: {value!r} is not one address")
        parts.append(encoded)
    return ",\r\n ".join(parts)


def build_message(email: OutgoingEmail, *, date: datetime | None = None) -> EmailMessage:
    """Build the MIME message for ``email``.

    Structure: a ``text/plain`` body; with ``html`` a ``multipart/alternative``
    of the two; with attachments, all of that inside ``multipart/mixed``.
    A non-ASCII address makes it an SMTPUTF8 message (UTF-8 headers; see
    :func:`needs_smtputf8`). ``date`` defaults to now (UTC).

    Raises ``ValueError`` naming the header for a line break or NUL in a header
    value, a malformed or reserved header name, or a malformed attachment type
    (and ``UnicodeEncodeError``, also a ValueError, for a lone surrogate).
    """
    sender = encode_address(_check_value("From", email.sender), len("From: "))
    recipient = encode_address(_check_value("To", email.recipient), len("To: "))
    # Display names are encoded words, so only the addresses decide SMTPUTF8.
    ascii_addresses = (sender or email.sender).isascii() and (
        recipient or email.recipient
    ).isascii()
    # Cc and Reply-To are written; Bcc never is (its addresses are for the envelope only).
    copies = _address_list("Cc", email.cc)
    reply_to = _address_list("Reply-To", [email.reply_to] if email.reply_to else [])
    ascii_addresses = ascii_addresses and copies.isascii() and reply_to.isascii()
    msg = EmailMessage(policy=_SMTP if ascii_addresses else _SMTPUTF8)
    _set_address(msg, "From", email.sender, sender)
    _set_address(msg, "To", email.recipient, recipient)
    if copies:
        msg.set_raw("Cc", copies)
    if reply_to:
        msg.set_raw("Reply-To", reply_to)
    msg.set_raw("Subject", encode_text(_check_value("Subject", email.subject), len("Subject: ")))
    msg.set_raw("Date", format_datetime(date) if date is not None else _date_now())
    _set_header(msg, "Message-ID", email.message_id)
    _set_header(msg, EVENT_ID_HEADER, email.event_id)
    for name, value in email.headers.items():
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"{name!r}: not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"{name}: header is set by the provider and cannot be overridden")
        _set_header(msg, name, value)
    if email.list_unsubscribe is not None:  # RFC 8058; folded between the two, never inside
        if any(name.lower().startswith("list-unsubscribe") for name in email.headers):
            raise ValueError("List-Unsubscribe: set by the category's unsubscribe settings")
        url, mailto = (_check_value("List-Unsubscribe", v) for v in email.list_unsubscribe)
        msg.set_raw("List-Unsubscribe", f"<{url}>,\r\n <{mailto}>")
        msg.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")

    # The body is filled into the top-level message itself: hoisting a part's
    # payload would need get_payload(), which decodes an 8-bit payload.
    msg.set_raw("MIME-Version", "1.0")
    texts = [email.text] if email.html is None else [email.text, email.html]
    if email.html is None and not email.attachments:
        _fill_text(msg, email.text, "plain")
        return msg
    if email.html is None:
        body = _fill_text(MIMEPart(policy=_SMTP), email.text, "plain")
    else:
        alternatives = [
            _fill_text(MIMEPart(policy=_SMTP), email.text, "plain"),
            _fill_text(MIMEPart(policy=_SMTP), email.html, "html"),
        ]
        if not email.attachments:
            _fill_multipart(msg, "alternative", alternatives, texts)
            return msg
        body = _fill_multipart(MIMEPart(policy=_SMTP), "alternative", alternatives, texts)
    parts = [body]
    for filename, content_type, data in email.attachments:
        parts.append(_attachment_part(filename, content_type, data))
    _fill_multipart(msg, "mixed", parts, texts)
    return msg


_date_cache: tuple[int, str] = (-1, "")


def _date_now() -> str:
    """``format_datetime(datetime.now(UTC))``, formatted once a second.

    Formatting was a fifth of the cost of building a message; the header has
    whole seconds, so a value computed earlier in the same second is the same.
    """
    global _date_cache
    seconds = int(time.time())
    cached = _date_cache
    if cached[0] != seconds:
        cached = _date_cache = (seconds, format_datetime(datetime.fromtimestamp(seconds, UTC)))
    return cached[1]


# Parts are assembled from already-encoded pieces (set_raw, set_payload) rather
# than with set_content/add_alternative: those re-parse every header they touch
# and made building a message cost 0.5 ms. Anything outside the simple case
# (a line over 998 octets, NUL) still goes through the stdlib content manager.


def _fill_text(part: _Part, text: str, subtype: str) -> _Part:
    data = text.encode("utf-8")
    lines = data.splitlines()
    if b"\x00" in data or max(map(len, lines), default=0) > _MAX_BODY_LINE:
        part.set_content(text, subtype=subtype)
        return part
    body = b"\n".join(lines) + b"\n"
    if data.isascii():
        cte, payload = "7bit", body.decode("ascii")
    else:
        # The form the content manager uses for 8bit text; the generator
        # re-encodes it as base64 when sending to a server without 8BITMIME.
        cte, payload = "8bit", body.decode("ascii", "surrogateescape")
    part.set_raw("Content-Type", f'text/{subtype}; charset="utf-8"')
    part.set_raw("Content-Transfer-Encoding", cte)
    part.set_payload(payload)
    return part


def _fill_multipart(part: _Part, subtype: str, parts: list[MIMEPart], texts: list[str]) -> _Part:
    """Make ``part`` a multipart of ``parts``; ``texts`` are the unencoded bodies among them.

    The boundary is chosen here, so the generator does not (it would compile a
    regex per message to check its pick against the text). It is one random
    value per process and subtype, which keeps Content-Type in the parse cache;
    a text containing it gets a fresh random one. Base64 and quoted-printable
    bodies cannot contain it: it starts with "=_".
    """
    boundary = _BOUNDARIES[subtype]
    if any(boundary in text for text in texts):
        boundary = _new_boundary()
    part.set_raw("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')
    part.set_payload(parts)  # type: ignore[arg-type]
    return part


def _new_boundary() -> str:
    # 96 random bits; short enough that the Content-Type line needs no folding.
    return "=_" + secrets.token_hex(12)


_BOUNDARIES = {"alternative": _new_boundary(), "mixed": _new_boundary()}


def _attachment_part(filename: str, content_type: str, data: bytes) -> MIMEPart:
    _check_value(f"Content-Disposition (attachment {filename!r})", filename)
    maintype, sep, subtype = content_type.partition("/")
    if (
        not sep
        or not _TOKEN.fullmatch(maintype)
        or not _TOKEN.fullmatch(subtype)
        or maintype.lower() == "multipart"
    ):
        raise ValueError(
            f"Content-Type (attachment {filename!r}): not a MIME type: {content_type!r}"
        )
    part = MIMEPart(policy=_SMTP)
    part.set_content(data, maintype=maintype, subtype=subtype, filename=filename)
    if "=?" in filename:
        # The email package writes it as a quoted string, which decoders read as
        # an encoded word; RFC 2231's percent-encoding is read back as it is.
        del part["Content-Disposition"]
        part.set_raw("Content-Disposition", "attachment;" + _rfc2231("filename", filename))
    return part


def _rfc2231(name: str, value: str) -> str:
    """``name*0*=utf-8''...`` continuations (RFC 2231), one folded line each."""
    pieces = [urllib.parse.quote(c, safe="!#$&+-.^_`|~") for c in value]
    segments: list[str] = []
    current = "utf-8''"
    for piece in pieces:
        if len(current) + len(piece) > _MAX_RAW - len(f" {name}*99*=;"):
            segments.append(current)
            current = ""
        current += piece
    segments.append(current)
    return ";".join(f"\r\n {name}*{i}*={seg}" for i, seg in enumerate(segments))


def _ascii_named(header: str, value: str) -> str:
    """A ``Name <addr>`` or ``addr`` value with the address in its ASCII form."""
    if value.isascii():
        return value
    parsed = _address_header(value)
    if parsed is None:
        raise ValueError(f"{header}: {value!r} is not one address")
    name, addr_spec = parsed
    plain = ascii_address(addr_spec)
    if plain is None:
        raise ValueError(
            f"{header}: {addr_spec!r} has a non-ASCII local part (no ASCII form to send instead)"
        )
    if not name:
        return plain
    local, _, domain = plain.rpartition("@")
    return str(headerregistry.Address(display_name=name, username=local, domain=domain))


def ascii_email(email: OutgoingEmail) -> OutgoingEmail:
    """``email`` for a server without SMTPUTF8: every address with an internationalised
    domain written with its IDNA A-labels (``xn--``), in the headers and the envelope alike.

    Raises ``ValueError`` naming the header of an address whose local part is not ASCII:
    there is no ASCII form of it, and such a message cannot go to that server.
    """

    def many(header: str, values: list[str]) -> list[str]:
        return [_ascii_named(header, v) for v in values]

    return msgspec.structs.replace(
        email,
        sender=_ascii_named("From", email.sender),
        recipient=_ascii_named("To", email.recipient),
        cc=many("Cc", email.cc),
        bcc=many("Bcc", email.bcc),
        reply_to=_ascii_named("Reply-To", email.reply_to) if email.reply_to else None,
        envelope_from=(
            _ascii_named("MAIL FROM", email.envelope_from) if email.envelope_from else None
        ),
    )


def needs_smtputf8(msg: EmailMessage) -> bool:
    """True for a message with UTF-8 headers, to be sent only with SMTPUTF8."""
    return bool(msg.policy.utf8)  # type: ignore[attr-defined]


def render_bytes(msg: EmailMessage, *, eight_bit: bool = True) -> bytes:
    """The message as bytes on the wire: CRLF line ends, 8-bit bodies kept 8-bit.

    With ``eight_bit=False`` (a server without 8BITMIME) 8-bit text parts are
    re-encoded as base64 on the way out.
    """
    if msg.policy is _SMTP or msg.policy is _SMTPUTF8:
        out: list[bytes] = []
        if _render_simple(msg, eight_bit, out, 0):
            return b"".join(out)
    return _render_stdlib(msg, eight_bit)


def final_bytes(
    msg: EmailMessage,
    *,
    eight_bit: bool = True,
    sign: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """The bytes a provider hands to its transport: ``render_bytes``, then ``sign`` (DKIM,
    :meth:`actors.domain.dkim.DkimSigner.sign`) as the very last step.

    Every provider gets its bytes here and nowhere else. Whatever changes the message
    (a header added for a request, a List-Unsubscribe) must be in ``msg`` before this call:
    a byte changed after signing breaks the signature.
    """
    data = render_bytes(msg, eight_bit=eight_bit)
    return sign(data) if sign is not None else data


# The generator cost ~50 us a message (a policy clone and a buffer per part, the
# Content-Type parsed to dispatch). The messages build_message makes without the
# content manager are written here instead, with the generator's exact bytes:
# raw printable-ASCII headers, folded or not (the policy writes them as they are), text
# parts and multipart/alternative or mixed of them. Anything else (a header
# object, a raw non-ASCII value, an attachment, 8-bit text for a 7-bit
# server, a preamble...) makes _render_simple return False, and the generator
# writes the whole message.
# A header line, or one folded by encode_text / encode_address (written as is:
# the policy never re-folds a raw value).
_SIMPLE_HEADER = re.compile(r"[!-9;-~]+: [\t -~]*(?:\r\n[\t ][\t -~]*)*")
_SIMPLE_TEXT = re.compile(r'text/(?:plain|html); charset="utf-8"')
_SIMPLE_MULTIPART = re.compile(r'multipart/(?:alternative|mixed); boundary="(=_[0-9a-f]{24})"')
_NEWLINES = re.compile(rb"\r\n|\r|\n")  # the generator's line ends (generator.NLCRE)
_MAX_DEPTH = 4


def _render_simple(part: MIMEPart, eight_bit: bool, out: list[bytes], depth: int) -> bool:
    """Append ``part`` as the generator would write it to ``out``; False if it is not simple."""
    if type(part) not in (EmailMessage, MIMEPart) or depth > _MAX_DEPTH:
        return False
    if part.preamble is not None or part.epilogue is not None:
        return False
    lines = []
    content_type = None
    for name, value in part.raw_items():
        if type(value) is not str:  # a parsed header object folds itself
            return False
        line = f"{name}: {value}"
        if not _SIMPLE_HEADER.fullmatch(line) or (
            len(line) > _MAX_RAW and max(map(len, line.split("\r\n"))) > _MAX_BODY_LINE
        ):
            return False
        if content_type is None and name.lower() == "content-type":
            content_type = value
        lines.append(line)
    lines.append("\r\n")
    head = "\r\n".join(lines).encode("ascii")
    payload = part._payload  # type: ignore[attr-defined]  # get_payload() parses CTE
    if content_type is None:
        return False
    multipart = _SIMPLE_MULTIPART.fullmatch(content_type)
    if multipart is not None:
        if type(payload) is not list:
            return False
        boundary = multipart.group(1).encode("ascii")
        out.append(head + b"--" + boundary + b"\r\n")
        for i, sub in enumerate(payload):
            if i:
                out.append(b"\r\n--" + boundary + b"\r\n")
            if not _render_simple(sub, eight_bit, out, depth + 1):
                return False
        out.append(b"\r\n--" + boundary + b"--\r\n")
        return True
    if not _SIMPLE_TEXT.fullmatch(content_type) or type(payload) is not str:
        return False
    if payload.isascii():
        data = payload.encode("ascii")
    elif not eight_bit:  # the generator re-encodes 8-bit text as base64
        return False
    else:
        try:  # 8-bit text is held as surrogate-escaped bytes (see _fill_text)
            data = payload.encode("ascii", "surrogateescape")
        except UnicodeEncodeError:
            return False
    if b"\r" in data:
        data = _NEWLINES.sub(b"\r\n", data)
    else:
        data = data.replace(b"\n", b"\r\n")
    out.append(head + data)
    return True


def _render_stdlib(msg: EmailMessage, eight_bit: bool) -> bytes:
    """``render_bytes`` with the stdlib generator, for any message."""
    policy = msg.policy if isinstance(msg.policy, _Policy) else _SMTP
    if not eight_bit:
        policy = policy.clone(cte_type="7bit")
    return msg.as_bytes(policy=policy)
