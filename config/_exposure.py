"""Whether a listening address is reachable from other machines.

The gRPC API and the HTTP endpoint may run without a token and without TLS only where no other
machine can reach it: on a loopback address. Anywhere else the configuration
must name a token and a certificate, or say ``allow_insecure = true`` on purpose.
"""

from __future__ import annotations

import ipaddress

__all__ = ["exposure_problem", "is_loopback"]


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1; False for anything else (0.0.0.0, names)."""
    if host.strip().lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_problem(
    host: str,
    *,
    token: bool,
    tls: bool,
    allow_insecure: bool,
    what: str = "the gRPC API",
    token_keys: str = "token_env or token_file",
) -> str | None:
    """Why listening on ``host`` as configured is refused, or None when it is fine."""
    if allow_insecure or is_loopback(host):
        return None
    missing = [what for what, ok in ((f"a token ({token_keys})", token),
                                     ("TLS (tls_cert_file and tls_key_file)", tls)) if not ok]
    if not missing:
        return None
    return (
        f"host {host!r} is reachable from other machines, so {what} needs "
        f"{' and '.join(missing)}; set them, listen on 127.0.0.1, or set "
        "allow_insecure = true to accept the risk"
    )
