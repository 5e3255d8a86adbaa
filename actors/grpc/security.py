"""What guards the gRPC edge: TLS contexts, bearer tokens, a cap on request size.

- TLS is on when ``grpc.tls_cert_file`` and ``grpc.tls_key_file`` are set: the
  servers present that certificate (TLS 1.2+, ALPN ``h2``), and the clients of
  the same configuration (the CLI, auth's client for integration) connect with
  TLS and verify the server against ``grpc.tls_ca_file`` (or the system's CAs).
  A client-only configuration (the CLI on another machine) sets just
  ``tls_ca_file``.
- The bearer token (``grpc.token_env`` / ``token_file``) is checked by
  ``grpc_api.require_token`` before any handler runs; clients send it with
  :func:`bearer_metadata`.
- grpclib reads a whole request into memory, however large its length prefix
  says it is; :func:`recv_request` (from ``grpc_intake``, which says how a
  request is taken in) refuses one larger than the configured limits allow
  (RESOURCE_EXHAUSTED) before reading its body, bounds counts and sizes before
  parsing, and answers a body that does not decode with INVALID_ARGUMENT.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from actors.grpc.intake import recv_request
from config import ConfigError

if TYPE_CHECKING:
    from config import GrpcConfig, LimitsConfig

__all__ = [
    "bearer_metadata",
    "client_ssl_context",
    "max_request_bytes",
    "recv_request",
    "server_ssl_context",
]

# A request carries the attachments as raw bytes (smaller than the base64 that
# max_message_bytes counts), the variables as a protobuf Struct (about twice the
# JSON) and a few short strings.
REQUEST_ALLOWANCE_BYTES = 64 * 1024


def max_request_bytes(limits: LimitsConfig) -> int:
    """The largest gRPC request a valid email can need; anything larger is refused unread."""
    return limits.max_message_bytes + 2 * limits.max_variables_bytes + REQUEST_ALLOWANCE_BYTES


def server_ssl_context(grpc: GrpcConfig) -> ssl.SSLContext | None:
    """The servers' TLS context, or None when TLS is off. A bad file is a ConfigError."""
    if not grpc.tls_cert_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(grpc.tls_cert_file, grpc.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "grpc.tls_cert_file",
            f"cannot load the certificate {grpc.tls_cert_file!r} with the key "
            f"{grpc.tls_key_file!r}: {exc}",
        ) from None
    ctx.set_alpn_protocols(["h2"])
    return ctx


def client_ssl_context(grpc: GrpcConfig) -> ssl.SSLContext | None:
    """The clients' TLS context, or None for plaintext (neither a certificate nor a CA set)."""
    ca_file = getattr(grpc, "tls_ca_file", "")
    if not grpc.tls_cert_file and not ca_file:
        return None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "grpc.tls_ca_file", f"cannot load the CA file {ca_file!r}: {exc}"
        ) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    return ctx


def bearer_metadata(token: str | None) -> dict[str, str] | None:
    """The call metadata that carries ``token``; None when there is none to send."""
    return {"authorization": f"Bearer {token}"} if token else None
