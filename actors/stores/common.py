"""What both email stores share: the page token, the exact-match search fields and the
``async with`` lifecycle.

A page token is the sort key of the last document on a page, ``(created_at, event_id)``,
as base64 JSON; both stores issue and read the same format.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, Self

import msgspec

from actors.domain.edges import SearchQuery
from actors.domain.validation import search_recipient

__all__ = [
    "OpenClose",
    "decode_page_token",
    "encode_page_token",
    "exact_filters",
    "metadata_filters",
]

_token_encoder = msgspec.json.Encoder()
_token_decoder = msgspec.json.Decoder(tuple[int, str])


def encode_page_token(sort_key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(_token_encoder.encode(sort_key)).decode()


def decode_page_token(token: str) -> tuple[int, str]:
    try:
        return _token_decoder.decode(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise ValueError(f"page_token: not a token this store issued ({token!r})") from exc


def exact_filters(query: SearchQuery) -> list[tuple[str, Any]]:
    """The exact-match fields *query* sets, as (field, value)."""
    fields = (
        # stored normalized by auth; found however the caller writes it
        ("recipient", search_recipient(query.recipient) if query.recipient else query.recipient),
        ("status", query.status.value if query.status is not None else None),
        ("category", query.category),
    )
    return [(field, value) for field, value in fields if value is not None]


def metadata_filters(query: SearchQuery) -> list[tuple[str, str]]:
    """(key, value) pairs a document's metadata must hold; keys are checked here, since
    both stores put a key into a field path (``metadata.<key>``)."""
    from actors.domain.addressing import METADATA_KEY_PATTERN

    for key in query.metadata:
        if not METADATA_KEY_PATTERN.fullmatch(key):
            pattern = METADATA_KEY_PATTERN.pattern
            raise ValueError(f"metadata: key {key!r:.60} must match ^{pattern}$")
    return sorted(query.metadata.items())


class OpenClose:
    """``async with store:`` opens it and closes it again, whatever happens inside."""

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
