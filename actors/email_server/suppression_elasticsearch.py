"""The suppression list in Elasticsearch: shared by every worker, on every machine.

The distributed profile's counterpart of the SQLite table (``actors.email_server.suppression``),
in an index the email server owns (``<email_server.claims_index>-suppressed``),
one document per address and category (``_id`` = the normalized address for an
entry for every category, ``address#category`` for one category: categories hold
no ``#``), created with ``op_type=create``, so the first entry stays). Senders
look addresses up once per email, so lookups read an in-memory copy of the list that every worker
refreshes every ``refresh_s`` (a search; the list is small) and that its own
additions update at once: an address refused on one machine is refused on the
others within ``refresh_s`` plus the index's refresh interval (about a second).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import trio

from actors.email_server.suppression import ALL_CATEGORIES, CATEGORY_PAUSE, Suppressed, normalize
from actors.stores.elasticsearch import IndexClient, unavailable_on_outage

__all__ = ["ElasticsearchSuppression", "suppression_index"]

_MAPPING: dict[str, Any] = {
    "dynamic": "false",
    "properties": {
        "address": {"type": "keyword"},
        "category": {"type": "keyword"},
        "addedAt": {"type": "date"},
        "source": {"type": "keyword"},
    },
}


def suppression_index(claims_index: str) -> str:
    return f"{claims_index}-suppressed"


class ElasticsearchSuppression(IndexClient):
    """The interface of :class:`actors.email_server.suppression.SuppressionList`, on one index."""

    mapping = _MAPPING
    what = "suppression"

    def __init__(
        self, url: str, index: str, *, refresh_s: float = 2.0, request_timeout: float = 10.0
    ) -> None:
        super().__init__(url, index, request_timeout=request_timeout)
        self.refresh_s = refresh_s
        self._known: dict[str, Suppressed] = {}  # by document id

    async def open(self) -> None:
        await super().open()
        await self.reload()

    async def keep_fresh(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Reload the list every ``refresh_s`` (run in a nursery for the service's life)."""
        task_status.started()
        while True:
            await trio.sleep(self.refresh_s)
            try:
                await self.reload()
            except Exception:  # an outage: keep the copy we have, try again next time
                continue

    async def reload(self) -> None:
        self._known = {_id(e.address, e.category): e for e in await self.entries(10_000)}

    def lookup(self, address: str, category: str = ALL_CATEGORIES) -> Suppressed | None:
        key = normalize(address)
        found = self._known.get(key)
        if found is None and category:
            found = self._known.get(_id(key, category))
        return found

    def blocking(self, recipient: str, category: str) -> Suppressed | None:
        return self.lookup(recipient, category) or self.lookup(CATEGORY_PAUSE, category)

    async def add(
        self,
        address: str,
        reason: str,
        *,
        event_id: str | None = None,
        source: str = "bounce",
        category: str = ALL_CATEGORIES,
    ) -> bool:
        entry = Suppressed(
            address=normalize(address),
            reason=reason,
            added_at=datetime.now(UTC),
            event_id=event_id,
            source=source,
            category=category,
        )
        doc_id = _id(entry.address, category)
        with unavailable_on_outage("suppress"):
            resp = await self._es.options(ignore_status=409).create(
                index=self.index, id=doc_id, document=msgspec.to_builtins(entry)
            )
        created = resp.meta.status == 201
        self._known.setdefault(doc_id, entry)
        return created

    async def remove(self, address: str, category: str | None = None) -> bool:
        """Delete the entry of ``category`` (None: every entry for ``address``)."""
        key = normalize(address)
        if category is None:
            ids = [i for i, e in self._known.items() if e.address == key]
            ids = ids or [key]
        else:
            ids = [_id(key, category)]
        removed = False
        for doc_id in ids:
            with unavailable_on_outage("unsuppress"):
                resp = await self._es.options(ignore_status=404).delete(
                    index=self.index, id=doc_id, refresh=True
                )
            self._known.pop(doc_id, None)
            removed = removed or resp.meta.status == 200
        return removed

    async def entries(self, limit: int = 1000) -> list[Suppressed]:
        with unavailable_on_outage("list suppressed"):
            resp = await self._es.search(
                index=self.index,
                size=limit,
                sort=[{"addedAt": {"order": "desc"}}],
                query={"match_all": {}},
            )
        return [msgspec.convert(h["_source"], Suppressed) for h in resp.body["hits"]["hits"]]


def _id(address: str, category: str) -> str:
    return f"{address}#{category}" if category else address
