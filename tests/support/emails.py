"""Rendered emails (``OutgoingEmail``) for the MIME and provider tests."""

from __future__ import annotations

from typing import Any

import msgspec

from actors.domain.edges import OutgoingEmail


def outgoing_email(i: int = 1, *, domain: str = "example.com", **changes: Any) -> OutgoingEmail:
    """Email number *i* from noreply@*domain* to ana@example.org, plain "Hello", with
    *changes* on top; its event id and Message-ID carry *i*."""
    base = OutgoingEmail(
        event_id=f"ev-{i}",
        sender=f"noreply@{domain}",
        recipient="ana@example.org",
        subject="Hello",
        text="Hello\n",
        message_id=f"<ev-{i}@{domain}>",
    )
    return msgspec.structs.replace(base, **changes)
