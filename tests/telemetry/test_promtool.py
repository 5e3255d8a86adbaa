"""The metrics page of a running ``up``, as Prometheus's own checker sees it: ``promtool
check metrics`` checks names, help, types and units by Prometheus's conventions
(tests/support/promtool.py). The distributed processes' pages are checked in
tests/system/test_operations.py."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from actors.testing.localservices import free_port
from tests.support.embedded_process import cli, embedded_env, running_embedded, wait_maildir
from tests.support.promtool import check_metrics


async def test_the_metrics_page_passes_promtool(tmp_path: Path) -> None:
    port = free_port()
    env = embedded_env(tmp_path, MAILACTORS__METRICS__PORT=str(port))
    async with running_embedded(env, tmp_path / "up.log"):
        sent = await cli(env, "send", "--to", "ada@example.com", "--template", "welcome",
                         "--var", "name=Ada", "--var", "product=Acme")  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["eventId"]
        await wait_maildir(tmp_path / "maildir", 1)
        async with httpx.AsyncClient() as client:
            with trio.fail_after(30):
                page = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert "mailactors_emails_total" in page and "mailactors_mailbox_depth" in page
    assert "_created" not in page and "mailactors_dlq_size" not in page
    assert 'service="' not in page and 'instance="' not in page
    await trio.to_thread.run_sync(check_metrics, page)
