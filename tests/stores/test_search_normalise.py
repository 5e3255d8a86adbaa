"""Search finds an email under the address as the caller wrote it (issue 14, item 5).

Auth stores the normalized recipient (``Case.X@Example.COM`` becomes
``Case.X@example.com``: the domain is case-insensitive, the local part is not),
so a search must normalize its recipient the same way, in both stores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.domain.edges import SearchQuery
from tests.support.embedded import embedded_config, request, running
from tests.support.stores import AnyStore, make_doc, opened, settle, store_maker

WRITTEN = "Case.X@Example.COM"
STORED = "Case.X@example.com"


@pytest.fixture(params=["sqlite", "elasticsearch"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyStore]:
    async with opened(store_maker(request, tmp_path / "emails.sqlite3")()) as s:
        yield s


async def found(store: AnyStore, recipient: str) -> list[str]:
    page = await store.search(SearchQuery(recipient=recipient))
    assert page.total == len(page.documents)
    return [d.event_id for d in page.documents]


async def test_search_normalizes_the_recipient_as_storage_does(store: AnyStore) -> None:
    await store.save_many(
        [
            make_doc(1, recipient=STORED),
            make_doc(2, recipient="other@example.com"),
            make_doc(3, recipient="not an address"),  # SaveEmail without checks
        ]
    )
    await settle(store)
    assert await found(store, STORED) == ["evt-00001"]
    assert await found(store, WRITTEN) == ["evt-00001"]
    assert await found(store, "Case.X@EXAMPLE.com") == ["evt-00001"]
    # the local part is case-sensitive (RFC 5321): no guess is made there
    assert await found(store, "case.x@example.com") == []
    # what is not an address is looked for as written
    assert await found(store, "not an address") == ["evt-00003"]
    assert await found(store, "nobody@example.com") == []


async def test_an_email_requested_for_a_mixed_case_address_is_found_as_written(
    tmp_path: Path,
) -> None:
    async with running(embedded_config(tmp_path)) as app:
        accepted = await app.request(request(to=WRITTEN))
        await app.wait_terminal(accepted.event_id)
        page = await app.api.search(SearchQuery(recipient=WRITTEN))
        assert [d.event_id for d in page.documents] == [accepted.event_id]
        assert page.documents[0].recipient == STORED
