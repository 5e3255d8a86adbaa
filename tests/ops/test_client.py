"""``send --attach``, ``search --since/--until`` and the documents as printed, against a
running embedded ``up``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.embedded_process import cli, embedded_env, running_embedded, wait_maildir


async def test_attach_search_by_date_and_rounded_latency(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    report = tmp_path / "report.csv"
    report.write_bytes(b"day,sent\n2026-12-01,3\n")
    async with running_embedded(env, tmp_path / "up.log"):
        sent = await cli(env, "send", "--to", "ada@example.com", "--template", "welcome",
                         "--var", "name=Ada", "--var", "product=Acme",
                         "--attach", str(report))  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        event_id = json.loads(sent.stdout)["eventId"]
        [message] = await wait_maildir(tmp_path / "maildir", 1)
        [part] = list(message.iter_attachments())
        assert part.get_filename() == "report.csv"
        assert part.get_content_type() == "text/csv"
        assert part.get_payload(decode=True) == b"day,sent\n2026-12-01,3\n"

        now = datetime.now(UTC)
        hour_ago, in_an_hour = (now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1))
        found = await cli(env, "search", "--status", "sent", "--since", hour_ago)
        *docs, summary = found.stdout.decode().splitlines()
        assert json.loads(summary)["total"] == 1, found.stderr
        doc = json.loads(docs[0])
        assert doc["eventId"] == event_id
        assert doc["latencyMs"] == round(doc["latencyMs"], 1)
        later = await cli(env, "search", "--since", in_an_hour.isoformat())
        assert json.loads(later.stdout.decode().splitlines()[-1])["total"] == 0
        before = await cli(env, "search", "--until", hour_ago)
        assert json.loads(before.stdout.decode().splitlines()[-1])["total"] == 0

        missing = await cli(env, "send", "--to", "ada@example.com", "--template", "welcome",
                            "--attach", str(tmp_path / "nope.pdf"))  # fmt: skip
        assert missing.returncode != 0
        assert f"--attach {tmp_path / 'nope.pdf'}: No such file" in missing.stderr.decode()
