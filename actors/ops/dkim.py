"""``supervisor.py dkim show DOMAIN`` and ``dkim keygen DOMAIN``: DKIM keys and their DNS records.

``show`` reads the domain's key as the email server would (``[dkim.domains."DOMAIN"]`` of the
profile: its key file or environment variable), checks it the same way, and prints the TXT
record to publish: its name (``selector._domainkey.domain``) and its value
(``v=DKIM1; k=rsa|ed25519; p=...``), cut into strings of at most 255 characters, which a DNS
TXT record needs (a verifier joins them with nothing between). ``--json`` prints the same
as one JSON object.

``keygen`` makes a new key (RSA 2048 bits by default, or Ed25519), writes it as PKCS#8 PEM to
``--out`` with mode 0600 (never over an existing file), and prints the record to publish and
the profile section that uses it. The private key is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from actors.domain.dkim import (
    Algorithm,
    DkimKey,
    dns_txt_record,
    generate_private_key,
    private_key_pem,
    txt_strings,
)
from config import DkimConfig, load_config

__all__ = ["keygen", "register", "show"]

_ALGORITHMS: dict[str, Algorithm] = {
    "rsa": "rsa-sha256",
    "rsa-sha256": "rsa-sha256",
    "ed25519": "ed25519-sha256",
    "ed25519-sha256": "ed25519-sha256",
}


def record_lines(key: DkimKey) -> list[str]:
    """The TXT record in zone-file syntax, one quoted string per line."""
    name, value = dns_txt_record(key)
    strings = [f'"{s}"' for s in txt_strings(value)]
    body = "\n    ".join(strings)
    return [f"{name}. IN TXT ( {body} )"]


def _describe(key: DkimKey) -> str:
    private = key.private_key
    size = f"{private.key_size}-bit RSA" if hasattr(private, "key_size") else "Ed25519"
    return f"{key.domain}: selector {key.selector}, {key.algorithm} ({size})"


def _print_record(key: DkimKey, as_json: bool) -> None:
    name, value = dns_txt_record(key)
    if as_json:
        print(
            json.dumps(
                {
                    "domain": key.domain,
                    "selector": key.selector,
                    "algorithm": key.algorithm,
                    "name": name,
                    "type": "TXT",
                    "value": value,
                    "strings": txt_strings(value),
                }
            )
        )
        return
    print(f"; DKIM public key of {_describe(key)}")
    print("; publish this TXT record (the strings are one value: DNS joins them):")
    for line in record_lines(key):
        print(line)


def show(config: DkimConfig, domain: str, *, as_json: bool = False) -> int:
    """Print the TXT record of ``domain``'s configured key; 1 if it has none."""
    from actors.providers.build import make_signer

    domain = domain.lower().rstrip(".")
    entry = config.domains.get(domain)
    if entry is None:
        known = ", ".join(sorted(config.domains)) or "none"
        print(
            f'no [dkim.domains."{domain}"] in this profile (signing domains: {known})',
            file=sys.stderr,
        )
        return 1
    # Reads and checks the key as start-up does; a ConfigError reaches supervisor.py, which
    # prints it on one line and exits 2.
    signer = make_signer(DkimConfig(domains={domain: entry}))
    assert signer is not None
    _print_record(signer.keys[domain], as_json)
    return 0


def keygen(
    domain: str, selector: str, algorithm: str, out: str, *, bits: int = 2048, as_json: bool = False
) -> int:
    """Write a new private key to ``out`` (0600, never over a file) and print its record."""
    alg = _ALGORITHMS[algorithm]
    domain = domain.lower().rstrip(".")
    try:
        key = DkimKey(domain, selector, alg, generate_private_key(alg, bits=bits))
    except ValueError as exc:
        print(f"dkim keygen: {exc}", file=sys.stderr)
        return 2
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        print(f"dkim keygen: {path} exists; not overwritten", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_pem(key.private_key))
    _print_record(key, as_json)
    if not as_json:
        print(f"; private key written to {path} (mode 0600); add to the profile:")
        print(f'; [dkim.domains."{domain}"]')
        print(f'; selector = "{selector}"')
        print(f'; algorithm = "{alg}"')
        print(f'; key_file = "{path.resolve()}"')
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dkim show`` and ``dkim keygen`` to supervisor.py's subcommands."""
    dkim = commands.add_parser(
        "dkim", help="DKIM keys: the DNS record to publish (show), a new key (keygen)"
    )
    sub = dkim.add_subparsers(dest="dkim_action", required=True)
    show_cmd = sub.add_parser("show", help="the DNS TXT record of DOMAIN's configured key")
    show_cmd.add_argument("domain", help="a domain of [dkim.domains]")
    show_cmd.add_argument("--json", action="store_true", help="one JSON object")
    show_cmd.set_defaults(
        handler=lambda a: show(load_config(a.profile).dkim, a.domain, as_json=a.json)
    )
    gen = sub.add_parser("keygen", help="make a key for DOMAIN, write it (0600), print its record")
    gen.add_argument("domain", help="the signing domain (the From address's)")
    gen.add_argument("--selector", required=True, help="the DNS label: S._domainkey.DOMAIN")
    gen.add_argument(
        "--algorithm", choices=sorted(_ALGORITHMS), default="rsa",
        help="rsa (rsa-sha256, 2048-bit) or ed25519 (ed25519-sha256, RFC 8463); default rsa",
    )  # fmt: skip
    gen.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")
    gen.add_argument("--out", required=True, help="file to create for the private key")
    gen.add_argument("--json", action="store_true", help="the record as one JSON object")
    gen.set_defaults(
        handler=lambda a: keygen(
            a.domain, a.selector, a.algorithm, a.out, bits=a.bits, as_json=a.json
        )
    )
