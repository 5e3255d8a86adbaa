"""What both email stores share: the page token and the ``async with`` lifecycle.

A page token is the sort key of the last document on a page, ``(created_at, event_id)``,
as base64 JSON; both stores issue and read the same format.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, Self

import msgspec

__all__ = ["OpenClose", "decode_page_token", "encode_page_token"]

_token_encoder = msgspec.json.Encoder()
_token_decoder = msgspec.json.Decoder(tuple[int, str])


def encode_page_token(sort_key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(_token_encoder.encode(sort_key)).decode()


def decode_page_token(token: str) -> tuple[int, str]:
    try:
        return _token_decoder.decode(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise ValueError(f"page_token: not a token this store issued ({token!r})") from exc


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
