"""The embedded benchmark's plain-script baseline does the work it claims: every email
validated, rendered, stored, written as a Maildir file and recorded SENT."""

from __future__ import annotations

import mailbox
from pathlib import Path

from actors.domain.schema import Status
from actors.stores.sqlite import SqliteStore
from bench.embedded import plain_script


async def test_plain_script_stores_and_delivers_every_email(tmp_path: Path) -> None:
    result = await plain_script(30, str(tmp_path), batch=8)
    assert result["n"] == 30 and result["emails_per_s"] > 0 and result["cpu_ms_per_email"] > 0
    box = mailbox.Maildir(tmp_path / "plain-maildir", create=False)
    messages = list(box)
    assert len(messages) == 30
    assert {m["To"] for m in messages} == {f"user{i}@example.com" for i in range(30)}
    store = SqliteStore(str(tmp_path / "plain.sqlite3"))
    await store.open()
    try:
        keys = {key.split(",")[1] for key in box.keys()}
        docs = [await store.get(event_id) for event_id in keys]
    finally:
        await store.close()
    assert all(d is not None and d.status is Status.SENT for d in docs)
