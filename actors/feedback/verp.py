"""VERP return paths: the envelope sender of each email names its eventId, signed.

Every outgoing email is sent with ``MAIL FROM:<bounces+<token>@<bounce domain>>``,
so a bounce (sent to the envelope sender, RFC 5321 section 4.5.5) or an ARF
report names the email it is about, without a lookup table. The token carries an
HMAC-SHA256 of the eventId under a key only we hold, so nobody can make us
believe in a bounce for an arbitrary eventId: an address whose tag does not verify
is refused at RCPT time (compared in constant time).

Token forms (the whole local part stays a valid dot-atom of at most 64 octets,
RFC 5321 section 4.5.3.1.1, and means the same in any letter case, because some
MTAs lower-case a return path):

* **direct**, ``<enc>.<tag>``: ``enc`` is the eventId written in lower case
  letters, digits and ``-`` as they are, everything else escaped with ``_``
  (``_a``..``_z`` an upper-case letter, ``_0`` ``.``, ``_1`` ``:``, ``__`` ``_``).
  A UUID eventId (36 characters) is written unchanged.
* **digest**, ``=<digest>.<tag>``: when the direct form would pass 64 octets (an
  eventId may have 128 characters), the token holds a SHA-256 digest of the
  eventId instead. The report then names the eventId itself (the original
  message's ``X-Mailactors-Event-Id`` or ``Message-ID``), and that eventId is
  accepted only if its digest is the one signed in the address.

``tag`` is 80 bits of HMAC-SHA256 (base32, 16 characters) over a form marker and
the eventId (direct) or the digest (digest form): a forger must guess 2**80
values, one SMTP command each.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

from actors.domain.event_checks import EVENT_ID_PATTERN
from config import BouncesConfig, ConfigError

__all__ = ["MAX_LOCAL_PART", "VerpAddress", "VerpCodec", "verp_codec"]

MAX_LOCAL_PART = 64  # octets, RFC 5321 section 4.5.3.1.1
TAG_BYTES = 10  # 80 bits of the HMAC
DIGEST_BYTES = 10  # 80 bits of SHA-256 of a long eventId
_B32_CHARS = 16  # base32 of 10 bytes, no padding

_ESCAPE = {".": "_0", ":": "_1", "_": "__"}
_UNESCAPE = {"0": ".", "1": ":", "_": "_"}
_TOKEN = re.compile(r"(=?)([a-z0-9_-]+)\.([a-z2-7]{16})")


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _unb32(text: str) -> bytes:
    return base64.b32decode(text.upper() + "=" * (-len(text) % 8))


_ENCODE = str.maketrans({**{c: "_" + c.lower() for c in string.ascii_uppercase}, **_ESCAPE})


def encode_event_id(event_id: str) -> str:
    """The eventId in lower case only (see the module docstring), reversible."""
    return event_id.translate(_ENCODE)


def decode_event_id(text: str) -> str | None:
    """The inverse of :func:`encode_event_id` (any letter case), or None if malformed."""
    text = text.lower()
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "_":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(text):
            return None
        nxt = text[i + 1]
        if "a" <= nxt <= "z":
            out.append(nxt.upper())
        elif nxt in _UNESCAPE:
            out.append(_UNESCAPE[nxt])
        else:
            return None
        i += 2
    decoded = "".join(out)
    return decoded if EVENT_ID_PATTERN.fullmatch(decoded) else None


@dataclass(frozen=True, slots=True)
class VerpAddress:
    """What a verified return-path token says.

    ``event_id`` is known for the direct form; for the digest form only
    ``digest`` is, and :meth:`VerpCodec.matches` tells whether an eventId named
    by the report is the one the address was made for.
    """

    event_id: str | None
    digest: bytes | None = None


class VerpCodec:
    """Builds and verifies the return paths of one bounce domain under one key.

    The key is held privately and never shown (``repr`` hides it). Addresses are
    made with ``key``; ``previous`` keys (the ones before a rotation) are still
    accepted, so that bounces of emails sent before it keep coming in.
    """

    __slots__ = ("_key", "_keys", "domain", "prefix")

    def __init__(
        self,
        key: str | bytes,
        domain: str,
        prefix: str = "bounces",
        previous: tuple[str | bytes, ...] = (),
    ) -> None:
        keys = [k.encode() if isinstance(k, str) else k for k in (key, *previous)]
        if any(len(k) < 16 for k in keys):
            raise ValueError("the VERP key must have at least 16 bytes (128 bits)")
        raw = keys[0]
        if not domain or "@" in domain:
            raise ValueError(f"domain: not a domain name: {domain!r}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,15}", prefix):
            raise ValueError(f"prefix: 1-16 lower-case letters, digits or '-', got {prefix!r}")
        self._key = raw
        self._keys = tuple(keys)
        self.domain = domain.lower().rstrip(".")
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"VerpCodec(key='***', domain={self.domain!r}, prefix={self.prefix!r})"

    def _tag(self, form: bytes, data: bytes, key: bytes | None = None) -> str:
        message = b"mailactors-verp-1\0" + form + b"\0" + data
        mac = hmac.new(self._key if key is None else key, message, hashlib.sha256)
        return _b32(mac.digest()[:TAG_BYTES])

    def _tag_ok(self, form: bytes, data: bytes, tag: str) -> bool:
        """Whether ``tag`` is the tag of ``data`` under the key or a previous one."""
        ok = False
        for key in self._keys:  # every key compared, in constant time each
            ok |= hmac.compare_digest(self._tag(form, data, key), tag)
        return ok

    def local_part(self, event_id: str) -> str:
        """``<prefix>+<token>``, at most 64 octets, for an eventId the system accepts."""
        if not EVENT_ID_PATTERN.fullmatch(event_id):
            raise ValueError(f"eventId: not a valid eventId: {event_id!r}")
        direct = f"{self.prefix}+{encode_event_id(event_id)}.{self._tag(b'd', event_id.encode())}"
        if len(direct) <= MAX_LOCAL_PART:
            return direct
        digest = hashlib.sha256(event_id.encode()).digest()[:DIGEST_BYTES]
        return f"{self.prefix}+={_b32(digest)}.{self._tag(b'h', digest)}"

    def address(self, event_id: str) -> str:
        """The return path (envelope sender) of the email ``event_id``."""
        return f"{self.local_part(event_id)}@{self.domain}"

    def verify_token(self, token: str) -> VerpAddress | None:
        """The token after ``<prefix>+`` checked; None when malformed or the tag is wrong."""
        match = _TOKEN.fullmatch(token.lower())
        if match is None:
            return None
        hashed, body, tag = match.groups()
        if hashed:
            if len(body) != _B32_CHARS or not re.fullmatch(r"[a-z2-7]+", body):
                return None
            digest = _unb32(body)
            return VerpAddress(None, digest) if self._tag_ok(b"h", digest, tag) else None
        event_id = decode_event_id(body)
        if event_id is None:
            return None
        return VerpAddress(event_id) if self._tag_ok(b"d", event_id.encode(), tag) else None

    def verify(self, address: str) -> VerpAddress | None:
        """A whole return path checked: prefix, domain and tag; None if any is wrong."""
        local, at, domain = address.strip().strip("<>").rpartition("@")
        if not at or domain.lower().rstrip(".") != self.domain:
            return None
        prefix, plus, token = local.partition("+")
        if not plus or prefix.lower() != self.prefix:
            return None
        return self.verify_token(token)

    @staticmethod
    def matches(verified: VerpAddress, event_id: str) -> bool:
        """Whether ``event_id`` is the email the verified address was made for."""
        if verified.event_id is not None:
            return verified.event_id == event_id
        digest = hashlib.sha256(event_id.encode()).digest()[:DIGEST_BYTES]
        return verified.digest is not None and hmac.compare_digest(digest, verified.digest)


def verp_codec(bounces: BouncesConfig, env: Mapping[str, str] | None = None) -> VerpCodec | None:
    """The codec ``[bounces]`` configures, or None when bounces by SMTP are off.

    The key is read from ``secret_env`` / ``secret_file`` here (a ConfigError names
    the variable or file, never the value).
    """
    if not bounces.enabled:
        return None
    key = bounces.secret(env)
    if key is None:  # BouncesConfig refuses enabled without a secret source
        raise ConfigError("bounces.secret", "enabled without secret_env or secret_file")
    previous = bounces.previous_secret(env)
    try:
        return VerpCodec(
            key, bounces.domain, bounces.local_prefix, (previous,) if previous else ()
        )
    except ValueError as exc:
        raise ConfigError("bounces", str(exc)) from None
