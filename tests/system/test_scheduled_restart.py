"""Scheduled sends survive a killed process, through the command line as a user runs it:
``send --send-at`` / ``--tag`` / ``--meta``, ``search --tag`` / ``--meta``, ``cancel`` and
``send --batch`` with issue 17's fields, against ``supervisor.py up`` (embedded, Maildir).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from actors.domain.schema import Status, document_decoder
from tests.support.embedded_process import (
    cli,
    embedded_env,
    read_maildir,
    running_embedded,
    wait_maildir,
)

pytestmark = pytest.mark.trio

SEND = ["send", "--template", "welcome", "--var", "name=Ada", "--var", "product=Acme"]


def _stored(path: Path) -> dict[str, object]:
    with sqlite3.connect(path) as conn:
        return {
            event_id: document_decoder.decode(doc)
            for event_id, doc in conn.execute("SELECT event_id, doc FROM emails")
        }


async def test_scheduled_emails_are_sent_after_a_kill_and_a_restart(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    due = datetime.now(UTC) + timedelta(seconds=20)
    send_at = due.astimezone(timezone(timedelta(hours=-5))).isoformat()
    ids: list[str] = []
    async with running_embedded(env, tmp_path / "up.log") as server:
        for n in range(4):
            done = await cli(
                env, *SEND, "--to", f"u{n}@example.com", "--send-at", send_at,
                "--tag", "sched", "--meta", f"n={n}",
            )
            assert done.returncode == 0, done.stderr.decode()
            answer = json.loads(done.stdout)
            assert answer["status"] == "SCHEDULED"
            ids.append(answer["eventId"])
        cancelled = await cli(env, "cancel", ids[3])
        assert cancelled.returncode == 0, cancelled.stderr.decode()
        assert json.loads(cancelled.stdout)["status"] == "CANCELLED"
        again = await cli(env, "cancel", ids[3])
        assert again.returncode == 1
        assert "FAILED_PRECONDITION" in again.stderr.decode()
        assert "is CANCELLED" in again.stderr.decode()
        found = await cli(env, "search", "--tag", "sched", "--meta", "n=2")
        lines = [json.loads(line) for line in found.stdout.decode().splitlines()]
        assert [d["eventId"] for d in lines[:-1]] == [ids[2]] and lines[-1]["total"] == 1
        assert datetime.now(UTC) < due, "too slow: the emails fell due before the kill"
        os.killpg(server.pid, signal.SIGKILL)  # no clean stop: nothing in memory survives
        await server.wait()
    assert read_maildir(tmp_path / "maildir") == []
    docs = _stored(tmp_path / "emails.sqlite3")
    assert [docs[i].status for i in ids] == [Status.SCHEDULED] * 3 + [Status.CANCELLED]

    async with running_embedded(env, tmp_path / "up2.log"):
        messages = await wait_maildir(tmp_path / "maildir", 3, timeout=90)
    sent = {str(m["X-Mailactors-Event-Id"]) for m in messages}
    assert sent == set(ids[:3])  # the cancelled one never
    docs = _stored(tmp_path / "emails.sqlite3")
    for event_id in ids[:3]:
        doc = docs[event_id]
        assert doc.status is Status.SENT
        assert doc.sent_at is not None and doc.sent_at >= due  # after its time, not before
    assert docs[ids[3]].status is Status.CANCELLED


async def test_send_batch_carries_the_new_fields_and_names_bad_lines(tmp_path: Path) -> None:
    env = embedded_env(tmp_path, MAILACTORS__API__SENDERS='["example.com"]')
    batch = tmp_path / "batch.jsonl"
    good = {"to": "ada@example.com", "template": "welcome",
            "variables": {"name": "Ada", "product": "Acme"}, "from": "news@example.com",
            "cc": ["carol@example.org"], "bcc": ["bob@example.net"],
            "headers": {"X-Campaign": "dec"}, "tags": ["batch"], "metadata": {"order": "7"}}
    bad = dict(good, headers={"Bcc": "victim@example.com"})
    batch.write_text("\n".join(json.dumps(x) for x in (good, bad, good | {"to": "b@x.org"})))
    async with running_embedded(env, tmp_path / "up.log"):
        done = await cli(env, "send", "--batch", str(batch), "--quiet")
        records = {r["line"]: r for r in map(json.loads, done.stdout.decode().splitlines())}
        assert done.returncode == 1, done.stderr.decode()
        assert "eventId" in records[1] and "eventId" in records[3]
        assert records[2]["error"].startswith("INVALID_ARGUMENT: headers['Bcc']: ")
        messages = await wait_maildir(tmp_path / "maildir", 2)
        found = await cli(env, "search", "--tag", "batch", "--meta", "order=7")
    assert json.loads(found.stdout.decode().splitlines()[-1])["total"] == 2
    for msg in messages:
        assert msg["Bcc"] is None and str(msg["Cc"]) == "carol@example.org"
        assert msg["X-Campaign"] == "dec" and str(msg["From"]) == "news@example.com"
