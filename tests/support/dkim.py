"""DKIM for tests: keys made once per session, a local DNS answer, dkimpy's verifier.

The verifier is dkimpy's own (``dkim.verify``), given a ``dnsfunc`` that answers the TXT
query of ``selector._domainkey.domain`` with the record ``supervisor.py dkim show`` prints:
its strings joined as a resolver joins them. So a test checks the signature the way a
receiving server would, against the record an operator would publish.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path

import dkim
from dkim.util import parse_tag_value

from actors.domain.dkim import (
    Algorithm,
    DkimKey,
    PrivateKey,
    dns_txt_record,
    generate_private_key,
    private_key_pem,
    txt_strings,
)

__all__ = [
    "assert_wire_safe",
    "dns_answers",
    "key_for",
    "signature_tags",
    "verifies",
    "write_key",
]


@functools.cache
def _private(algorithm: Algorithm, n: int) -> PrivateKey:
    return generate_private_key(algorithm)


def key_for(
    domain: str, algorithm: Algorithm = "rsa-sha256", selector: str = "s1", n: int = 0
) -> DkimKey:
    """A key for ``domain`` (the n-th of its algorithm this session: RSA keygen is slow)."""
    return DkimKey(domain, selector, algorithm, _private(algorithm, n))


def dns_answers(keys: Iterable[DkimKey]) -> Callable[..., bytes | None]:
    """A dkimpy ``dnsfunc``: the TXT record of each key, as a resolver returns it."""
    records = {}
    for key in keys:
        name, value = dns_txt_record(key)
        records[name] = "".join(txt_strings(value)).encode("ascii")

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode("ascii").rstrip("."))

    return dnsfunc


def verifies(data: bytes, *keys: DkimKey, index: int = 0) -> bool:
    """True if the ``index``-th DKIM-Signature of ``data`` verifies against ``keys``' DNS."""
    try:  # as dkim.verify(), for any signature: a failure raises a DKIMException
        return bool(dkim.DKIM(data).verify(idx=index, dnsfunc=dns_answers(keys)))
    except dkim.DKIMException:
        return False


def signature_tags(data: bytes, index: int = 0) -> dict[str, str]:
    """The tags of the ``index``-th DKIM-Signature, whitespace removed (h= as "a:b:c")."""
    headers, _ = dkim.rfc822_parse(data)
    values = [v for name, v in headers if name.lower() == b"dkim-signature"]
    tags = parse_tag_value(values[index])
    return {k.decode(): b"".join(v.split()).decode() for k, v in tags.items()}


def assert_wire_safe(data: bytes) -> None:
    """Every line ends with CRLF (no bare CR or LF) and holds at most 998 octets."""
    assert data.endswith(b"\r\n"), "the message does not end with CRLF"
    lines = data[:-2].split(b"\r\n")
    for number, line in enumerate(lines, 1):
        assert b"\r" not in line and b"\n" not in line, f"line {number}: bare CR or LF"
        assert len(line) <= 998, f"line {number}: {len(line)} octets"


def write_key(directory: Path, key: DkimKey, name: str = "") -> Path:
    """``key`` as a PEM file (mode 0600) in ``directory``."""
    path = directory / (name or f"{key.domain}.{key.selector}.key")
    path.write_bytes(private_key_pem(key.private_key))
    path.chmod(0o600)
    return path
