"""The feedback ledger in Elasticsearch (distributed profile): one index, two kinds of document.

``seen#<key>`` marks an applied report; ``soft#<address>#<key>`` is one soft bounce
(``op_type=create``, so a repeat is a 409 and counts once). Counting an address's
soft bounces is a ``_count`` with a range on ``at``, after a refresh of the index so
the bounce just written is counted (soft bounces are rare; the refresh is cheap).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from actors.stores.elasticsearch import IndexClient, unavailable_on_outage

__all__ = ["ElasticsearchLedger"]

_MAPPING: dict[str, Any] = {
    "dynamic": "false",
    "properties": {
        "kind": {"type": "keyword"},
        "address": {"type": "keyword"},
        "at": {"type": "date"},
    },
}


class ElasticsearchLedger(IndexClient):
    mapping = _MAPPING
    what = "feedback ledger"

    async def seen(self, key: str) -> bool:
        with unavailable_on_outage("read feedback ledger"):
            resp = await self._es.options(ignore_status=404).get(
                index=self.index, id=f"seen#{key}", source=False
            )
        return bool(resp.body.get("found"))

    async def mark_seen(self, key: str, at: datetime) -> None:
        with unavailable_on_outage("write feedback ledger"):
            await self._es.options(ignore_status=409).create(
                index=self.index, id=f"seen#{key}", document={"kind": "seen", "at": at.isoformat()}
            )

    async def add_soft_bounce(self, address: str, key: str, at: datetime) -> int:
        doc = {"kind": "soft", "address": address, "at": at.isoformat()}
        with unavailable_on_outage("write feedback ledger"):
            resp = await self._es.options(ignore_status=409).create(
                index=self.index, id=f"soft#{address}#{key}", document=doc, refresh="wait_for"
            )
        return 1 if resp.meta.status == 201 else 0

    async def soft_bounces(self, address: str, since: datetime) -> int:
        query = {
            "bool": {
                "filter": [
                    {"term": {"kind": "soft"}},
                    {"term": {"address": address}},
                    {"range": {"at": {"gte": since.isoformat()}}},
                ]
            }
        }
        with unavailable_on_outage("read feedback ledger"):
            resp = await self._es.count(index=self.index, query=query)
        return int(resp.body["count"])
