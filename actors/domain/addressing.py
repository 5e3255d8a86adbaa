"""Checks on what a request adds to the basic email: sender, Reply-To, cc, bcc, headers,
tags, metadata and send_at (issue 17). One clear error per bad field, as in ``validation``.

Why the rules are what they are:

* The sender must be one the operator configured (``[api] senders``: addresses, or
  domains for every address at them): an open From would let any caller spoof any
  domain through our DKIM keys and reputation. The provider's own sender is always
  allowed. A category may have a default sender (``[api] default_senders``).
* Every address is checked like the recipient (syntax, RFC 5321 lengths) and
  normalized the same way, so a search finds it however it was written.
* Custom headers come from an allow-list: ``X-*`` and the few standard headers an
  application sets itself (threading, list identity). Whatever the system writes
  (From, To, Date, Message-ID, MIME, DKIM-Signature, Return-Path, List-Unsubscribe,
  X-Mailactors-*) is refused, as is any control character in a value: a line
  break in a header value is a header injection.
* Tags and metadata are for the caller's correlation, so they are small, plain
  and searchable as exact values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.utils import parseaddr
from typing import Any

import msgspec

from actors.domain.templates import HEADER_BREAKERS
from actors.domain.validation import InvalidField, normalize_address

__all__ = [
    "ALLOWED_HEADERS",
    "MAX_COPIES",
    "MAX_HEADERS",
    "MAX_METADATA",
    "MAX_NAME_OCTETS",
    "MAX_TAGS",
    "Addressing",
    "SenderPolicy",
    "check_addressing",
    "check_event_addressing",
    "check_metadata",
    "check_send_at",
    "check_tags",
    "format_sender",
]

MAX_COPIES = 50  # cc + bcc addresses in one email
MAX_HEADERS = 20
MAX_HEADER_VALUE_CHARS = 900  # stays under RFC 5322's 998 once folded with its name
MAX_TAGS = 10
MAX_METADATA = 20
MAX_METADATA_VALUE_CHARS = 256
MAX_NAME_CHARS = 200  # a display name
# ... and its UTF-8 octets: a non-ASCII name is written as one encoded word (see
# mime.encode_address), 4/3 of this plus 13 on its own line, well under RFC 5322's 998.
MAX_NAME_OCTETS = 600

TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
# No dots: a key is also a path in the stores (metadata.<key>).
METADATA_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
# RFC 5322 section 3.6.8: printable US-ASCII except colon.
_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")
# RFC 3339 section 5.6 date-time: a full date, time and an explicit offset.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)

# Lower-case names an application may set. X-* is allowed besides these (except ours).
ALLOWED_HEADERS = frozenset(
    {
        "list-id",
        "list-archive",
        "list-help",
        "list-owner",
        "list-post",
        "list-subscribe",
        "references",
        "in-reply-to",
        "keywords",
        "comments",
        "auto-submitted",
        "precedence",
        "importance",
        "priority",
    }
)
_SYSTEM_PREFIXES = ("x-mailactors-",)


class SenderPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Who may be the sender: addresses and whole domains; defaults per category."""

    addresses: frozenset[str] = frozenset()  # normalized, lower-cased
    domains: frozenset[str] = frozenset()  # lower-cased
    defaults: dict[str, tuple[str, str | None]] = {}  # category -> (address, display name)
    any_sender: bool = False  # the email server's re-check: auth already held the sender

    @classmethod
    def build(
        cls,
        provider_sender: str,
        senders: Sequence[str] = (),
        default_senders: Mapping[str, str] = {},
    ) -> SenderPolicy:
        """From the config: ``senders`` entries with an ``@`` are addresses, others domains.

        ``default_senders`` values are ``address`` or ``Name <address>``; each is also
        an allowed sender. Raises InvalidField naming a bad entry.
        """
        addresses: set[str] = set()
        domains: set[str] = set()
        _, sender = _parse_named(provider_sender, "provider.sender")
        addresses.add(sender.lower())
        for i, entry in enumerate(senders):
            entry = entry.strip()
            if "@" in entry.lstrip("@"):
                addresses.add(_parse_named(entry, f"api.senders[{i}]")[1].lower())
            else:  # "example.com" or "@example.com": every address at it
                domains.add(entry.lstrip("@").lower().rstrip("."))
        defaults: dict[str, tuple[str, str | None]] = {}
        for category, value in default_senders.items():
            name, address = _parse_named(value, f"api.default_senders.{category}")
            addresses.add(address.lower())
            defaults[category] = (address, name)
        return cls(addresses=frozenset(addresses), domains=frozenset(domains), defaults=defaults)

    def allows(self, address: str) -> bool:
        if self.any_sender:
            return True
        lower = address.lower()
        return lower in self.addresses or lower.rpartition("@")[2] in self.domains


def _parse_named(value: str, field: str) -> tuple[str | None, str]:
    """``Name <addr>`` or ``addr`` from the config -> (name or None, address).

    Configured addresses are the operator's, and may be local (``mailactors@localhost``):
    they are parsed, not held to the rules for a caller's addresses.
    """
    name, address = parseaddr(value)
    if "@" not in address or HEADER_BREAKERS.search(value):
        raise InvalidField(field, f"not an address or 'Name <address>': {value!r}")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidField(
            field, f"the display name is {len(name)} characters, more than {MAX_NAME_CHARS}"
        )
    _check_name_octets(name, field)
    return name or None, address


def _check_name_octets(name: str | None, field: str) -> None:
    octets = len(name.encode("utf-8", "surrogatepass")) if name else 0
    if octets > MAX_NAME_OCTETS:
        raise InvalidField(
            field, f"the display name is {octets} octets in UTF-8, more than {MAX_NAME_OCTETS}"
        )


def format_sender(address: str, name: str | None) -> str:
    """The From value ``Name <address>`` (quoted as needed), or the bare address."""
    if not name:
        return address
    local, _, domain = address.rpartition("@")
    return str(Address(display_name=name, username=local, domain=domain))


class Addressing(msgspec.Struct, frozen=True, kw_only=True):
    """The checked, normalized extras of one request."""

    from_address: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    cc: list[str] = []
    bcc: list[str] = []
    headers: dict[str, str] = {}
    tags: list[str] = []
    metadata: dict[str, str] = {}


def _plain(field: str, value: Any, most: int) -> str:
    if not isinstance(value, str):
        raise InvalidField(field, f"must be a string, got {type(value).__name__}")
    if HEADER_BREAKERS.search(value):
        raise InvalidField(field, "must not contain line breaks (CR, LF) or control characters")
    if len(value) > most:
        raise InvalidField(field, f"is {len(value)} characters, more than {most}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField(field, "is not valid Unicode (lone surrogate)") from None
    return value


def _check_headers(headers: Any, prefix: str) -> dict[str, str]:
    if not headers:
        return {}
    if not isinstance(headers, Mapping):
        raise InvalidField(f"{prefix}headers", "must be a map of header name to value")
    if len(headers) > MAX_HEADERS:
        raise InvalidField(f"{prefix}headers", f"{len(headers)} headers, more than {MAX_HEADERS}")
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name in sorted(headers, key=str):
        field = f"{prefix}headers[{name!r}]"
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            raise InvalidField(
                field, "not a valid header name (printable ASCII without ':' or space)"
            )
        lower = name.lower()
        if lower.startswith(_SYSTEM_PREFIXES) or not (
            lower.startswith("x-") or lower in ALLOWED_HEADERS
        ):
            raise InvalidField(
                field,
                "is not a header a request may set (allowed: X-* and "
                + ", ".join(sorted(ALLOWED_HEADERS))
                + "); the system writes the others",
            )
        if lower in seen:
            raise InvalidField(field, "is given twice (header names are case-insensitive)")
        seen.add(lower)
        value = _plain(field, headers[name], MAX_HEADER_VALUE_CHARS)
        if not value.strip():
            raise InvalidField(field, "must not be blank")
        out[name] = value
    return out


def check_tags(tags: Any, prefix: str = "") -> list[str]:
    """Tags as a request may carry them (deduplicated, in order), or InvalidField."""
    if not tags:
        return []
    if isinstance(tags, str) or not isinstance(tags, Sequence):
        raise InvalidField(f"{prefix}tags", "must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise InvalidField(f"{prefix}tags", f"{len(tags)} tags, more than {MAX_TAGS}")
    out: list[str] = []
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not TAG_PATTERN.fullmatch(tag):
            raise InvalidField(
                f"{prefix}tags[{i}]", f"must match ^{TAG_PATTERN.pattern}$, got {tag!r:.60}"
            )
        if tag not in out:
            out.append(tag)
    return out


def check_metadata(metadata: Any, prefix: str = "") -> dict[str, str]:
    """Metadata as a request may carry it, or InvalidField."""
    if not metadata:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidField(f"{prefix}metadata", "must be a map of string to string")
    if len(metadata) > MAX_METADATA:
        raise InvalidField(
            f"{prefix}metadata", f"{len(metadata)} entries, more than {MAX_METADATA}"
        )
    out: dict[str, str] = {}
    for key in sorted(metadata, key=str):
        if not isinstance(key, str) or not METADATA_KEY_PATTERN.fullmatch(key):
            raise InvalidField(
                f"{prefix}metadata", f"key {key!r:.60} must match ^{METADATA_KEY_PATTERN.pattern}$"
            )
        out[key] = _plain(f"{prefix}metadata[{key!r}]", metadata[key], MAX_METADATA_VALUE_CHARS)
    return out


def check_addressing(
    given: Any, *, policy: SenderPolicy, recipient: str, prefix: str = ""
) -> Addressing:
    """Check the extras of ``given`` (a request or a send event: ``category``, ``from_address``,
    ``from_name``, ``reply_to``, ``cc``, ``bcc``, ``headers``, ``tags``, ``metadata``; those it
    lacks are unset), for ``recipient`` (already normalized). Raises InvalidField naming the
    first bad field (``prefix`` goes before its name)."""
    category = getattr(given, "category", "transactional")
    from_address = getattr(given, "from_address", None)
    from_name = getattr(given, "from_name", None)
    reply_to = getattr(given, "reply_to", None)
    cc = getattr(given, "cc", ())
    bcc = getattr(given, "bcc", ())
    headers = getattr(given, "headers", None)
    tags = getattr(given, "tags", ())
    metadata = getattr(given, "metadata", None)
    name: str | None = None
    if from_name is not None:
        name = _plain(f"{prefix}from_name", from_name, MAX_NAME_CHARS).strip() or None
        _check_name_octets(name, f"{prefix}from_name")
    address: str | None = None
    if from_address is not None:
        address = normalize_address(from_address, f"{prefix}from_address")
        if not policy.allows(address):
            raise InvalidField(
                f"{prefix}from_address",
                f"{address!r} is not a configured sender (set [api] senders to allow it)",
            )
    elif category in policy.defaults:
        address, default_name = policy.defaults[category]
        name = name or default_name
    elif name is not None:
        raise InvalidField(f"{prefix}from_name", "needs from_address (or a category default)")
    reply = normalize_address(reply_to, f"{prefix}reply_to") if reply_to is not None else None
    copies: dict[str, list[str]] = {"cc": [], "bcc": []}
    seen = {recipient.lower()}
    for kind, given in (("cc", cc), ("bcc", bcc)):
        if isinstance(given, str) or not isinstance(given, Sequence):
            raise InvalidField(f"{prefix}{kind}", "must be a list of addresses")
        for i, value in enumerate(given):
            checked = normalize_address(value, f"{prefix}{kind}[{i}]")
            if checked.lower() in seen:  # one copy per address: duplicates are dropped
                continue
            seen.add(checked.lower())
            copies[kind].append(checked)
    if len(copies["cc"]) + len(copies["bcc"]) > MAX_COPIES:
        raise InvalidField(
            f"{prefix}cc", f"cc and bcc hold more than {MAX_COPIES} addresses together"
        )
    return Addressing(
        from_address=address,
        from_name=name,
        reply_to=reply,
        cc=copies["cc"],
        bcc=copies["bcc"],
        headers=_check_headers(headers, prefix),
        tags=check_tags(tags, prefix),
        metadata=check_metadata(metadata, prefix),
    )


def check_send_at(
    value: Any, horizon_s: float, now: datetime | None = None, field: str = "send_at"
) -> datetime | None:
    """The UTC time an email is due, or None to send it now (unset, or not in the future).

    ``value`` is RFC 3339 with an explicit offset (``2026-12-01T18:00:00+01:00``); at most
    ``horizon_s`` seconds ahead.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise InvalidField(
            field, f"must be RFC 3339 with an offset (2026-12-01T18:00:00Z), got {value!r:.60}"
        )
    try:
        when = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidField(field, f"{value!r}: {exc}") from None
    when = when.astimezone(UTC)
    now = now or datetime.now(UTC)
    if when <= now:
        return None
    if when - now > timedelta(seconds=horizon_s):
        raise InvalidField(
            field, f"is more than {horizon_s:.0f} s ahead (api.schedule_horizon_s)"
        )
    return when


_ANY_SENDER = SenderPolicy(any_sender=True)


def check_event_addressing(
    event: Any, *, recipient: str | None = None, prefix: str = ""
) -> Addressing:
    """The checks of :func:`check_addressing` on a send event's (or a saved document's) fields,
    bar the sender policy (auth applied it): what another program publishes or saves is held to
    the same syntax, header allow-list and sizes before anything reaches a provider or the
    store. ``recipient``: the normalized one, if ``event.recipient`` may not be. Raises
    InvalidField naming the field (after ``prefix``)."""
    return check_addressing(
        event, policy=_ANY_SENDER, recipient=recipient or event.recipient, prefix=prefix
    )
