"""Claims in an Elasticsearch index: the distributed profile's shared record
(``actors.stores.claims``).

Every email-server worker, on any machine, reaches the deployment's
Elasticsearch; the index (``email_server.claims_index``) belongs to the email
server, which creates it at start-up. Standard APIs only, so it runs unchanged
on a real cluster:

* a batch of claims is one ``_bulk`` of ``create`` ops (``_id`` = eventId): a
  201 is a won claim, a 409 means the eventId is claimed already;
* those are read back with ``_mget`` (real-time, with ``_seq_no`` and
  ``_primary_term``) and, where the claim is released or its owner's lease has
  expired, taken over with an ``index`` op guarded by ``if_seq_no`` /
  ``if_primary_term``: of two takers, one gets a 409;
* an outcome is an ``index`` op guarded by the seq_no the owner's own write
  returned, so an owner whose claim was taken over cannot overwrite it.

Three round trips at most per batch of claims, one per batch of outcomes.
Connection errors, timeouts, 429 and 5xx raise StoreUnavailable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from actors.domain.edges import StoreUnavailable
from actors.domain.schema import EmailStatusEvent
from actors.stores.claims import (
    Claim,
    ClaimDecision,
    ClaimState,
    OneRoundTrip,
    Settle,
    new_owner,
    owner_dead,
)
from actors.stores.elasticsearch import IndexClient, _ndjson, unavailable_on_outage

__all__ = ["CLAIMS_MAPPING", "ElasticsearchClaims"]

CLAIMS_MAPPING: dict[str, Any] = {
    "dynamic": "false",
    "properties": {
        "owner": {"type": "keyword"},
        "state": {"type": "keyword"},
        "leaseUntil": {"type": "double"},  # epoch seconds
        "outcome": {"type": "object", "enabled": False},
    },
}

_encoder = msgspec.json.Encoder()


class ElasticsearchClaims(IndexClient, OneRoundTrip):
    """:class:`actors.stores.claims.ClaimStore` on one Elasticsearch index."""

    mapping = CLAIMS_MAPPING
    what = "claims"

    def __init__(
        self,
        url: str,
        index: str,
        *,
        owner: str | None = None,
        request_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(url, index, request_timeout=request_timeout)
        self.clock = clock  # wall clock of leases (a test passes a fake)
        self.owner = owner or new_owner()

    def _source(self, until: float) -> bytes:
        return _encoder.encode(
            {"owner": self.owner, "state": ClaimState.SENDING, "leaseUntil": until}
        )

    async def write(
        self, event_ids: Sequence[str], lease_s: float, settles: Sequence[Settle]
    ) -> tuple[list[Claim], list[bool]]:
        """Claims and outcomes in one ``_bulk``: one round trip for what the senders of a
        worker have in hand at once (measured: the API's cost is mostly per request)."""
        if not event_ids and not settles:
            return [], []
        now = self.clock()
        until = now + lease_s
        source = self._source(until)
        lines = self._settle_lines(settles)
        for event_id in event_ids:
            lines += [_encoder.encode({"create": {"_id": event_id}}), source]
        items = await self._bulk(lines)
        kept = self._settled(settles, items[: len(settles)])
        answers: dict[str, Claim] = {}
        taken: list[str] = []
        for event_id, item in zip(event_ids, items[len(settles) :], strict=True):
            status = item.get("status", 500)
            if status == 201:
                answers[event_id] = Claim(
                    event_id=event_id, decision=ClaimDecision.SEND, token=_token(item)
                )
            elif status == 409:
                taken.append(event_id)
            else:
                raise _item_error("claim", event_id, item)
        if taken:
            answers.update(await self._resolve(sorted(set(taken)), now, until))
        return [answers[e] for e in event_ids], kept

    async def _resolve(self, event_ids: list[str], now: float, until: float) -> dict[str, Claim]:
        """Claimed already: an outcome, a live holder, or a claim to take over (guarded)."""
        with unavailable_on_outage("read claims"):
            resp = await self._es.mget(index=self.index, ids=event_ids)
        answers: dict[str, Claim] = {}
        takeovers: list[tuple[str, dict[str, Any]]] = []
        for doc in resp.body["docs"]:
            event_id = doc["_id"]
            if not doc.get("found"):
                # Deleted between our create and this read (an operator): look again later.
                answers[event_id] = Claim(event_id=event_id, decision=ClaimDecision.HELD)
                continue
            src = doc["_source"]
            state, holder, lease = (
                src.get("state"),
                src.get("owner", ""),
                src.get("leaseUntil", 0.0),
            )
            if state == ClaimState.DONE:
                outcome = msgspec.convert(src["outcome"], EmailStatusEvent)
                answers[event_id] = Claim(
                    event_id=event_id, decision=ClaimDecision.OUTCOME, outcome=outcome
                )
            elif state == ClaimState.SENDING and lease > now and not owner_dead(holder):
                answers[event_id] = Claim(
                    event_id=event_id,
                    decision=ClaimDecision.HELD,
                    owner=holder,
                    lease_left_s=lease - now,
                )
            else:
                takeovers.append((event_id, doc))
        if takeovers:
            source = self._source(until)
            lines: list[bytes] = []
            for event_id, doc in takeovers:
                guard = {"if_seq_no": doc["_seq_no"], "if_primary_term": doc["_primary_term"]}
                lines += [_encoder.encode({"index": {"_id": event_id, **guard}}), source]
            for (event_id, doc), item in zip(takeovers, await self._bulk(lines), strict=True):
                status = item.get("status", 500)
                src = doc["_source"]
                if status in (200, 201):
                    sending = src.get("state") == ClaimState.SENDING
                    answers[event_id] = Claim(
                        event_id=event_id,
                        decision=ClaimDecision.TAKEOVER if sending else ClaimDecision.SEND,
                        token=_token(item),
                        owner=src.get("owner", ""),
                    )
                elif status == 409:  # another worker took it first
                    answers[event_id] = Claim(event_id=event_id, decision=ClaimDecision.HELD)
                else:
                    raise _item_error("take over", event_id, item)
        return answers

    def _settle_lines(self, settles: Sequence[Settle]) -> list[bytes]:
        lines: list[bytes] = []
        for s in settles:
            seq_no, _, term = s.claim.token.partition(":")
            guard = {"if_seq_no": int(seq_no), "if_primary_term": int(term)}
            body: dict[str, Any] = {"owner": self.owner, "leaseUntil": 0.0}
            if s.outcome is None:
                body["state"] = ClaimState.RELEASED
            else:
                body["state"] = ClaimState.DONE
                body["outcome"] = msgspec.to_builtins(s.outcome)
            lines += [
                _encoder.encode({"index": {"_id": s.claim.event_id, **guard}}),
                _encoder.encode(body),
            ]
        return lines

    def _settled(self, settles: Sequence[Settle], items: list[dict[str, Any]]) -> list[bool]:
        out: list[bool] = []
        for s, item in zip(settles, items, strict=True):
            status = item.get("status", 500)
            if status in (200, 201):
                out.append(True)
            elif status == 409:
                out.append(False)
            else:
                raise _item_error("settle", s.claim.event_id, item)
        return out

    async def outcome(self, event_id: str) -> EmailStatusEvent | None:
        with unavailable_on_outage("read claim"):
            resp = await self._es.options(ignore_status=404).get(index=self.index, id=event_id)
        if not resp.body.get("found"):
            return None
        src = resp.body["_source"]
        if src.get("state") != ClaimState.DONE:
            return None
        return msgspec.convert(src["outcome"], EmailStatusEvent)

    async def _bulk(self, lines: list[bytes]) -> list[dict[str, Any]]:
        with unavailable_on_outage("claims bulk"):
            resp = await self._es.bulk(index=self.index, operations=_ndjson(lines))
        return [next(iter(item.values())) for item in resp.body["items"]]


def _token(item: dict[str, Any]) -> str:
    return f"{item['_seq_no']}:{item['_primary_term']}"


def _item_error(what: str, event_id: str, item: dict[str, Any]) -> Exception:
    status = item.get("status", 500)
    error = item.get("error")
    if status == 429 or status >= 500:
        return StoreUnavailable(f"elasticsearch claims {what} {event_id}: {status} {error}")
    return RuntimeError(f"elasticsearch refused the claims {what} of {event_id}: {status} {error}")
