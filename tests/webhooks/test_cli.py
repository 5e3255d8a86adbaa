"""``supervisor.py webhooks list-failed | replay`` on the embedded outbox."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trio

from actors.webhooks import SqliteOutbox, WebhookItem
from actors.webhooks.cli import list_failed, replay
from tests.support.embedded import embedded_config
from tests.support.webhooks import webhook_sections


def test_list_failed_and_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hooks = webhook_sections(tmp_path, [
        {"name": "crm", "url": "https://crm.example.com/h", "secret": "s1"},
        {"name": "bi", "url": "https://bi.example.com/h", "secret": "s2"},
    ])  # fmt: skip
    config = embedded_config(tmp_path, webhooks=hooks)

    async def give_up_three() -> None:
        async with SqliteOutbox(config.webhooks.outbox_path) as outbox:
            items = [
                WebhookItem(webhook_id=f"msg_{i}", endpoint="crm" if i else "bi",
                            event_id=f"e{i}", sequence=i, body=b'{"status": "SENT"}',
                            created_at=time.time())  # fmt: skip
                for i in range(3)
            ]
            await outbox.add_many(items)
            for item in items:
                job = await outbox.take(item.endpoint)
                await outbox.give_up(job, "HTTP 500: down")

    trio.run(give_up_three)
    assert list_failed(config, 100) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(x["endpoint"], x["eventId"], x["error"]) for x in lines} == {
        ("bi", "e0", "HTTP 500: down"), ("crm", "e1", "HTTP 500: down"),
        ("crm", "e2", "HTTP 500: down"),
    }  # fmt: skip
    assert lines[0]["body"] == {"status": "SENT"} and lines[0]["tries"] == 1
    assert replay(config, "nope", None) == 2
    assert "no endpoint 'nope'" in capsys.readouterr().err
    assert replay(config, "crm", None) == 0
    assert json.loads(capsys.readouterr().out) == {"replayed": 2}
    assert list_failed(config, 100) == 0
    left = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["endpoint"] for x in left] == ["bi"]
