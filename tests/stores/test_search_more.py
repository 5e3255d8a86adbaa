"""Search by template and subject text, and oldest first: both stores, the same answers.

(The web view's email log uses them; the rest of the search contract is in test_store.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from actors.domain.edges import SearchQuery
from actors.domain.schema import EmailStatusEvent, Status
from tests.support.stores import AnyStore, make_doc, opened, settle, store_maker


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.services)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyStore]:
    async with opened(store_maker(request, tmp_path / "emails.sqlite3")()) as s:
        yield s


async def all_pages(store: AnyStore, query: SearchQuery) -> list[str]:
    ids: list[str] = []
    while True:
        page = await store.search(query)
        ids.extend(d.event_id for d in page.documents)
        if not page.next_page_token:
            return ids
        query = msgspec.structs.replace(query, page_token=page.next_page_token)


async def test_template_subject_and_order(store: AnyStore) -> None:
    docs = [
        make_doc(i, template="welcome" if i % 2 else "verification",
                 subject=f"Your order {i} shipped" if i % 3 else f"Invoice 100% {i}")
        for i in range(30)
    ]  # fmt: skip
    await store.save_many(docs)
    await settle(store)

    welcome = await all_pages(store, SearchQuery(template="welcome", page_size=4))
    assert welcome == [d.event_id for d in reversed(docs) if d.template == "welcome"]

    oldest = await all_pages(store, SearchQuery(oldest_first=True, page_size=7))
    assert oldest == [d.event_id for d in docs]  # each once, in order, across pages

    shipped = await all_pages(store, SearchQuery(subject_text="order", page_size=5))
    assert shipped == [d.event_id for d in reversed(docs) if "order" in (d.subject or "")]
    invoices = await store.search(SearchQuery(subject_text="INVOICE", template="verification"))
    want = [d.event_id for d in reversed(docs)
            if d.template == "verification" and "Invoice" in (d.subject or "")]  # fmt: skip
    assert [d.event_id for d in invoices.documents] == want
    assert invoices.total == len(want) > 0
    percent = await store.search(SearchQuery(subject_text="100%", page_size=100))
    assert percent.total == len(want) * 2  # a % in the text is a %, not a wildcard
    counts = await store.count_by_status(SearchQuery(template="verification", status=Status.SENT))
    assert counts == {Status.PENDING: 15}  # its status filter left out; the others apply
    await store.apply_status_many([EmailStatusEvent(event_id=docs[0].event_id,
                                                    status=Status.FAILED, error="x")])  # fmt: skip
    await settle(store)
    counts = await store.count_by_status(SearchQuery())
    assert counts == {Status.PENDING: 29, Status.FAILED: 1}
    none = await store.search(SearchQuery(subject_text="nothing-like-this"))
    assert (none.total, none.documents) == (0, [])
