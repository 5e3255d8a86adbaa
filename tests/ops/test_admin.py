"""``supervisor.py dlq purge`` against a real RabbitMQ, and ``suppression import/export``
against the embedded profile's SQLite file, run as an operator types them."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from actors.bus import RabbitBus, delete_topology
from runtime import open_asyncio_edge
from tests.support.embedded_process import SUPERVISOR
from tests.support.rabbitmq import make_config, publish_dead_letters


async def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, SUPERVISOR, *args],
            env=env,
            stdin=subprocess.DEVNULL,  # not a terminal: nobody to ask
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


@pytest.mark.services
async def test_dlq_purge_needs_a_confirmation_and_deletes_the_oldest(rabbitmq_url: str) -> None:
    config = make_config(rabbitmq_url)
    env = {
        **os.environ,
        "MAILACTORS__BUS__URL": rabbitmq_url,
        **{f"MAILACTORS__BUS__{k.upper()}": getattr(config, k) for k in (
            "send_exchange", "status_exchange", "send_queue", "status_queue",
            "dead_letter_exchange", "dead_letter_queue")},
    }  # fmt: skip
    async with open_asyncio_edge() as edge:
        owner = RabbitBus(config, url=rabbitmq_url, role="email-server")
        await owner.open()
        try:
            await edge.run(publish_dead_letters, rabbitmq_url, config, 5)
            refused = await _cli(env, "--profile", "distributed", "dlq", "purge", "--limit", "2")
            assert refused.returncode == 2
            assert b"would delete 2 of 5 dead letter(s)" in refused.stderr
            assert b"--yes" in refused.stderr
            done = await _cli(env, "dlq", "purge", "--limit", "2", "--yes",
                              "--profile", "distributed")  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == {"purged": 2}
            left = await owner.dead_letters(10)
            # The two oldest are gone; the rest are there, in order.
            assert [json.loads(d.body)["eventId"] for d in left] == ["dl-002", "dl-003", "dl-004"]
        finally:
            with trio.CancelScope(shield=True):
                await owner.close()
                await edge.run(delete_topology, config, url=rabbitmq_url)


async def test_suppression_import_checks_each_row_and_export_gives_them_back(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "MAILACTORS__SERVICE__DATA_DIR": str(tmp_path)}
    env.pop("MAILACTORS_PROFILE", None)
    source = tmp_path / "in.csv"
    source.write_text(
        "address,reason\nBob@Example.com,left the company\nnot-an-address,\n"
        "bob@example.com,again\ncarol@example.org,\n"
    )
    imported = await _cli(env, "suppression", "import", str(source))
    assert imported.returncode == 1  # one row refused, the others imported
    assert json.loads(imported.stdout) == {"added": 2, "already": 1, "refused": 1}
    assert imported.stderr.decode().strip() == "line 3: not an email address: 'not-an-address'"
    assert (tmp_path / "sent.sqlite3").is_file()  # in data_dir, as everything written

    exported = await _cli(env, "suppression", "export")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout.decode())))
    by_address = {r["address"]: r for r in rows}
    assert set(by_address) == {"bob@example.com", "carol@example.org"}
    assert by_address["bob@example.com"]["reason"] == "left the company"
    assert by_address["carol@example.org"]["reason"] == "imported"
    assert all(r["source"] == "import" and r["added_at"] for r in rows)

    # What export wrote, import reads: a list moved from one deployment to another.
    copy = tmp_path / "out.csv"
    assert (await _cli(env, "suppression", "export", str(copy))).returncode == 0
    other = {**env, "MAILACTORS__SERVICE__DATA_DIR": str(tmp_path / "other")}
    again = await _cli(other, "suppression", "import", str(copy))
    assert json.loads(again.stdout) == {"added": 2, "already": 0, "refused": 0}

    missing = await _cli(env, "suppression", "import", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and b"No such file" in missing.stderr
