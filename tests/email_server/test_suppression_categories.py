"""Suppression entries for every category or for one, in both stores (SQLite and Elasticsearch).

An unsubscribe from a newsletter must not stop a password reset; a hard bounce stops all.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actors.email_server.suppression import SuppressionList


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.services)])
async def suppressions(request: Any, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        async with SuppressionList(tmp_path / "sent.sqlite3") as sqlite_list:
            yield sqlite_list
        return
    from actors.email_server.suppression_elasticsearch import ElasticsearchSuppression

    url = request.getfixturevalue("elasticsearch_url")
    async with ElasticsearchSuppression(url, f"supp-{uuid.uuid4().hex[:8]}") as es_list:
        yield es_list


async def test_a_category_entry_stops_only_that_category(suppressions: Any) -> None:
    assert await suppressions.add("Ada@Example.com", "unsubscribed", category="newsletter",
                                  source="unsubscribe")  # fmt: skip
    entry = suppressions.lookup("ada@example.com", "newsletter")
    assert entry is not None
    assert (entry.category, entry.source) == ("newsletter", "unsubscribe")
    assert suppressions.lookup("ada@example.com", "transactional") is None
    assert suppressions.lookup("ada@example.com") is None  # no entry for every category
    # A second entry for the same category is not added; the first stays.
    assert not await suppressions.add("ada@example.com", "again", category="newsletter")


async def test_an_entry_for_every_category_wins_and_remove_takes_what_it_names(
    suppressions: Any,
) -> None:
    await suppressions.add("bob@example.com", "unsubscribed", category="newsletter")
    await suppressions.add("bob@example.com", "550 no such user")
    for category in ("newsletter", "transactional"):
        entry = suppressions.lookup("bob@example.com", category)
        assert entry is not None and entry.category == ""
    assert await suppressions.remove("bob@example.com", "")
    entry = suppressions.lookup("bob@example.com", "newsletter")
    assert entry is not None and entry.category == "newsletter"
    assert suppressions.lookup("bob@example.com", "transactional") is None
    await suppressions.add("bob@example.com", "550 no such user")
    assert await suppressions.remove("bob@example.com")  # None: every entry for the address
    assert suppressions.lookup("bob@example.com", "newsletter") is None
    assert not await suppressions.remove("bob@example.com")
    assert [e.address for e in await suppressions.entries()] == []


async def test_a_file_from_before_categories_is_carried_over(tmp_path: Path) -> None:
    path = tmp_path / "sent.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE suppressed (address TEXT PRIMARY KEY, reason TEXT NOT NULL,"
        " added_at TEXT NOT NULL, event_id TEXT, source TEXT NOT NULL)"
    )
    db.execute(
        "INSERT INTO suppressed VALUES ('old@example.com', '550 gone', "
        "'2026-11-01T00:00:00+00:00', 'ev-1', 'bounce')"
    )
    db.commit()
    db.close()
    async with SuppressionList(path) as suppressions:
        entry = suppressions.lookup("old@example.com", "newsletter")
        assert entry is not None
        assert (entry.reason, entry.event_id, entry.category) == ("550 gone", "ev-1", "")
    async with SuppressionList(path) as again:  # a second open finds nothing left to carry
        assert len(await again.entries()) == 1


async def test_blocking_names_the_address_entry_before_a_pause(suppressions: Any) -> None:
    assert suppressions.blocking("ada@example.com", "newsletter") is None
    await suppressions.add("*", "paused: complaint rate", category="newsletter", source="rate")
    paused = suppressions.blocking("ada@example.com", "newsletter")
    assert paused is not None and paused.reason == "paused: complaint rate"
    assert suppressions.blocking("ada@example.com", "transactional") is None
    await suppressions.add("Ada@Example.com", "hard bounce")
    own = suppressions.blocking("ADA@example.com", "newsletter")
    assert own is not None and own.reason == "hard bounce"  # the address's own entry first


async def test_a_write_by_another_list_of_the_process_is_seen_at_once(tmp_path: Path) -> None:
    """Lookups answer absent addresses from memory; a write through any list of this
    process on the same file (the feedback sink's, another worker's) is seen by the very
    next lookup."""
    path = tmp_path / "sent.sqlite3"
    async with SuppressionList(path) as sender_side, SuppressionList(path) as operator:
        sender_side.recheck_s = 3600.0  # only a write of this process can make it look again
        assert sender_side.blocking("bo@example.com", "transactional") is None  # cached: empty
        await operator.add("bo@example.com", "operator", source="operator")
        entry = sender_side.blocking("bo@example.com", "transactional")
        assert entry is not None and entry.reason == "operator"
        await operator.remove("bo@example.com")
        assert sender_side.blocking("bo@example.com", "transactional") is None


async def test_another_program_s_write_is_seen_once_the_file_is_asked_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sent.sqlite3"
    async with SuppressionList(path) as sender_side:
        sender_side.recheck_s = 3600.0
        assert sender_side.blocking("bo@example.com", "transactional") is None
        # A plain sqlite3 connection, as the CLI or another program writes it.
        with sqlite3.connect(path) as db:
            db.execute(
                "INSERT INTO suppressions VALUES ('bo@example.com', '', 'cli', '2026-12-01', "
                "NULL, 'operator')"
            )
        db.close()
        assert sender_side.blocking("bo@example.com", "transactional") is None  # not asked yet
        sender_side.recheck_s = 0.0  # as if recheck_s had passed
        entry = sender_side.blocking("bo@example.com", "transactional")
        assert entry is not None and entry.reason == "cli"


async def test_too_many_entries_to_keep_in_memory_are_read_from_the_file(tmp_path: Path) -> None:
    async with SuppressionList(tmp_path / "sent.sqlite3") as big:
        big.max_cached = 2
        for name in ("a", "b", "c"):
            await big.add(f"{name}@example.com", "bounce")
        entry = big.blocking("c@example.com", "transactional")
        assert entry is not None and entry.address == "c@example.com"
        assert big.blocking("d@example.com", "transactional") is None
