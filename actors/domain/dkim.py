"""DKIM signing (RFC 6376) of a rendered message: rsa-sha256 and ed25519-sha256 (RFC 8463).

Pure given a key: no I/O. The keys are parsed once (:func:`load_private_key`) and held by
a :class:`DkimSigner`, which signs the final bytes of each message, the last step before a
provider hands them to its transport (:func:`actors.domain.mime.final_bytes`). The signing
domain is the domain of the message's From header, so a per-request From is signed with its
own domain's key; a From domain without a key is sent unsigned, or refused with
``require=True``.

dkimpy does the DKIM part: message parsing, relaxed/relaxed canonicalisation, the choice of
the header instances that ``h=`` names (``dkim.hash_headers``), the ``b=`` stripping rule.
The private-key operation itself is done with ``cryptography`` (OpenSSL): dkimpy's own RSA
is pure Python and cost 5.4 ms per email here against 0.2 ms, more than the whole pipeline
spends on an email. The result is checked with dkimpy's verifier in the tests.

A signature that would break in transit is refused rather than sent: the bytes must end
every line with CRLF (no bare CR or LF, which a relay would rewrite) and no line may pass
998 octets (RFC 5322 2.1.1, which a relay would fold). ``render_bytes`` never produces
either; :meth:`DkimSigner.sign` checks it anyway, since a line that changes breaks the
signature silently at the receiver.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Literal

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

__all__ = [
    "ALGORITHMS",
    "OVERSIGNED_HEADERS",
    "SIGNED_HEADERS",
    "Algorithm",
    "DkimKey",
    "DkimSigner",
    "DkimStatistics",
    "PrivateKey",
    "dns_txt_record",
    "generate_private_key",
    "load_private_key",
    "private_key_pem",
    "txt_strings",
]

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
ALGORITHMS: tuple[Algorithm, ...] = ("rsa-sha256", "ed25519-sha256")
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# Signed when present, in the order they appear (RFC 6376 5.4.1's list, narrowed to what
# build_message writes and what callers may add). Bcc, Return-Path and Received are never
# signed: they are added or removed on the way.
SIGNED_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
)
# Named once more in h= whether present or not (RFC 6376 8.15, "oversigning"): a verifier
# then hashes an empty value for the extra name, so a copy of the header added in transit
# (a second From, a Reply-To that was not there) breaks the signature.
OVERSIGNED_HEADERS = (
    "from",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
)

_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_MIN_RSA_BITS = 1024  # RFC 8301 3.2: verifiers must refuse smaller keys
_MAX_LINE = 998  # RFC 5322 2.1.1, without the CRLF
_B64_LINE = 72  # how much of b= goes on one folded line
# A domain as it may appear in d= (A-labels, lowercase) and a selector (dot-atoms of labels).
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DOMAIN_PATTERN = rf"^{_LABEL}(?:\.{_LABEL})*$"
_SEL_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
SELECTOR_PATTERN = rf"^{_SEL_LABEL}(?:\.{_SEL_LABEL})*$"


def load_private_key(data: str | bytes, algorithm: Algorithm) -> PrivateKey:
    """Parse a DKIM private key for ``algorithm``; ``ValueError`` saying what is wrong.

    Accepted: a PEM private key (PKCS#1 ``RSA PRIVATE KEY`` or PKCS#8 ``PRIVATE KEY``, as
    ``openssl genpkey`` writes them), and for ed25519 also the base64 of the 32-byte seed
    (the form dkimpy's ``dknewkey`` writes). The message never contains the key.
    """
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    raw = raw.strip()
    key: object
    if raw.startswith(b"-----BEGIN"):
        if b"ENCRYPTED" in raw.split(b"\n", 1)[0] or b"Proc-Type: 4,ENCRYPTED" in raw:
            raise ValueError("the key is encrypted with a passphrase; give it unencrypted")
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ValueError("not a readable PEM private key") from None
    else:
        key = _ed25519_seed(raw)
        if key is None:
            raise ValueError(
                "not a private key: expected PEM (-----BEGIN ... PRIVATE KEY-----) "
                "or, for ed25519, the base64 of a 32-byte seed"
            )
    if isinstance(key, rsa.RSAPrivateKey):
        if algorithm != "rsa-sha256":
            raise ValueError(f"key/algorithm mismatch: an RSA key, but algorithm is {algorithm!r}")
        if key.key_size < _MIN_RSA_BITS:
            raise ValueError(
                f"an RSA key of {key.key_size} bits: DKIM needs at least {_MIN_RSA_BITS} "
                "(RFC 8301); use 2048"
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        if algorithm != "ed25519-sha256":
            raise ValueError(
                f"key/algorithm mismatch: an Ed25519 key, but algorithm is {algorithm!r}"
            )
        return key
    raise ValueError(
        f"unsupported key type ({type(key).__name__}): DKIM signs with RSA or Ed25519"
    )


def _ed25519_seed(raw: bytes) -> ed25519.Ed25519PrivateKey | None:
    try:
        seed = base64.b64decode(raw, validate=True)
    except ValueError:
        return None
    if len(seed) != 32:
        return None
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def generate_private_key(algorithm: Algorithm, *, bits: int = 2048) -> PrivateKey:
    """A new key for ``algorithm`` (RSA of ``bits`` bits, e = 65537)."""
    if algorithm == "rsa-sha256":
        if bits < 2048:
            raise ValueError(f"an RSA key of {bits} bits is too weak for a new key; use 2048+")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ed25519.Ed25519PrivateKey.generate()


def private_key_pem(key: PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM, the form :func:`load_private_key` reads."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_key_b64(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        # SubjectPublicKeyInfo DER: what every verifier (and dkimpy) reads from p=.
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:  # RFC 8463 3: the raw 32-byte public key
        der = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    return base64.b64encode(der).decode("ascii")


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A signing domain's key: ``selector._domainkey.domain`` publishes its public half."""

    domain: str  # d=, lowercase A-labels
    selector: str  # s=
    algorithm: Algorithm
    private_key: PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not re.fullmatch(DOMAIN_PATTERN, self.domain):
            raise ValueError(f"not a lowercase domain name: {self.domain!r}")
        if not re.fullmatch(SELECTOR_PATTERN, self.selector):
            raise ValueError(f"not a DKIM selector: {self.selector!r}")
        if len(self.dns_name) > 253:  # RFC 1035's limit on a name
            raise ValueError(f"selector too long: {self.dns_name!r} is over 253 characters")
        want = rsa.RSAPrivateKey if self.algorithm == "rsa-sha256" else ed25519.Ed25519PrivateKey
        if not isinstance(self.private_key, want):
            raise ValueError(f"key/algorithm mismatch for {self.algorithm!r}")

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def key_type(self) -> str:
        """The k= of its DNS record: ``rsa`` or ``ed25519``."""
        return self.algorithm.partition("-")[0]

    def public_key_b64(self) -> str:
        return _public_key_b64(self.private_key)

    def sign_digest(self, digest: bytes) -> bytes:
        """The signature of a SHA-256 ``digest`` (what b= holds, before base64)."""
        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        # RFC 8463 3: ed25519-sha256 signs the SHA-256 of the canonicalised headers (PureEdDSA).
        return key.sign(digest)


def dns_txt_record(key: DkimKey) -> tuple[str, str]:
    """``(name, value)`` of the TXT record that publishes ``key``'s public half."""
    return key.dns_name, f"v=DKIM1; k={key.key_type}; p={key.public_key_b64()}"


def txt_strings(value: str, size: int = 255) -> list[str]:
    """``value`` cut into the character-strings of a TXT record (at most 255 octets each,
    RFC 1035 3.3); a verifier joins them back without separators (RFC 6376 3.6.2.2)."""
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


@dataclass(frozen=True, slots=True)
class DkimStatistics:
    signed: int
    unsigned: int  # the From domain had no key (sent without a signature)


class DkimSigner:
    """Signs messages with the key of their From domain (see the module docstring).

    ``keys`` maps a domain (lowercase) to its key. ``exclude`` names headers never to sign,
    for a provider that rewrites them (SES replaces Message-ID and Date): see
    :meth:`without`. ``require``: a From domain without a key is a ``ValueError`` instead of
    an unsigned message.
    """

    def __init__(
        self,
        keys: Mapping[str, DkimKey],
        *,
        require: bool = False,
        exclude: Collection[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = {domain.lower(): key for domain, key in keys.items()}
        for domain, key in self.keys.items():
            if key.domain != domain:
                raise ValueError(f"the key for {domain!r} signs for {key.domain!r}")
        self.require = require
        self.exclude = frozenset(name.lower() for name in exclude)
        self._clock = clock
        self._counts = [0, 0]  # signed, unsigned; shared with the views of without()
        self._signed = tuple(h.encode("ascii") for h in SIGNED_HEADERS if h not in self.exclude)
        self._oversigned = tuple(
            h.encode("ascii") for h in OVERSIGNED_HEADERS if h not in self.exclude
        )

    def __repr__(self) -> str:
        domains = ", ".join(f"{d} ({k.selector}, {k.algorithm})" for d, k in self.keys.items())
        return f"DkimSigner({domains or 'no keys'}, require={self.require})"

    def without(self, headers: Collection[str]) -> DkimSigner:
        """The same keys and counters, never signing ``headers`` (lowercase or not)."""
        view = DkimSigner(
            self.keys, require=self.require, exclude=self.exclude | set(headers), clock=self._clock
        )
        view._counts = self._counts
        return view

    def statistics(self) -> DkimStatistics:
        return DkimStatistics(signed=self._counts[0], unsigned=self._counts[1])

    def sign(self, data: bytes) -> bytes:
        """``data`` with a ``DKIM-Signature`` header in front, or as it is when the From
        domain has no key (and ``require`` is off).

        ``ValueError`` for bytes whose signature could not survive transit (a bare CR or
        LF, a line over 998 octets), a message without exactly one From address, or, with
        ``require``, a From domain without a key. Nothing in the message is changed.
        """
        # Counted rather than searched with a regex: ten times cheaper on an attachment.
        crlf = data.count(b"\r\n")
        if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
            raise ValueError("DKIM: the message has a bare CR or LF; relays would rewrite it")
        if len(data) > _MAX_LINE and max(map(len, data.split(b"\r\n"))) > _MAX_LINE:
            raise ValueError("DKIM: the message has a line over 998 octets; relays would fold it")
        headers, body = dkim.rfc822_parse(data)
        domain = _from_domain(headers)
        key = self.keys.get(domain)
        if key is None:
            if self.require:
                raise ValueError(f"DKIM: no key for the From domain {domain!r} (dkim.require)")
            self._counts[1] += 1
            return data
        # Each present instance of a signed header (select_headers takes them bottom-up),
        # then the oversigned names once more.
        counts = Counter(name.lower() for name, _ in headers)
        include = [n for n in self._signed for _ in range(counts[n])] + list(self._oversigned)
        body_hash = base64.b64encode(hashlib.sha256(_RELAXED.canonicalize_body(body)).digest())
        now = int(self._clock())
        # One tag group per line so that nothing ever needs refolding; b= comes last and
        # its value is appended after the hash (RE_BTAG strips it, and its folds, again).
        value = b"".join(
            (
                b" v=1; a=" + key.algorithm.encode("ascii") + b"; c=relaxed/relaxed;",
                b"\r\n d=" + key.domain.encode("ascii"),
                b"; s=" + key.selector.encode("ascii"),
                b"; t=" + str(now).encode("ascii"),
                b";\r\n h=" + _fold_names(include),
                b";\r\n bh=" + body_hash,
                b";\r\n b=",
            )
        )
        hasher = hashlib.sha256()
        dkim.hash_headers(
            hasher,
            _RELAXED,
            _RELAXED.canonicalize_headers(headers),
            include,
            (b"DKIM-Signature", value),
            {},
        )
        signature = base64.b64encode(key.sign_digest(hasher.digest()))
        folded = b"\r\n ".join(
            signature[i : i + _B64_LINE] for i in range(0, len(signature), _B64_LINE)
        )
        self._counts[0] += 1
        return b"DKIM-Signature:" + value + folded + b"\r\n" + data


def _fold_names(names: list[bytes]) -> bytes:
    """``h=`` names joined by ":", folded after a colon (FWS is allowed there) every few."""
    lines: list[bytes] = []
    line = b""
    for name in names:
        piece = name if not line else b":" + name
        if line and len(line) + len(piece) > 60:
            lines.append(line + b":")
            line = name
        else:
            line += piece
    lines.append(line)
    return b"\r\n  ".join(lines)


def _from_domain(headers: list[list[bytes]]) -> str:
    """The lowercase A-label domain of the message's one From address."""
    values = [value for name, value in headers if name.lower() == b"from"]
    if len(values) != 1:
        raise ValueError(f"DKIM: the message has {len(values)} From headers, not one")
    text = values[0].decode("utf-8", "surrogateescape").replace("\r\n", "")
    addresses = [addr for _, addr in getaddresses([text]) if addr]
    if len(addresses) != 1 or "@" not in addresses[0]:
        raise ValueError("DKIM: the From header does not hold exactly one address")
    domain = addresses[0].rpartition("@")[2].strip().rstrip(".").lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"DKIM: the From domain {domain!r} is not a domain name") from None
    return domain
