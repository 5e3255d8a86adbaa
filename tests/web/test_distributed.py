"""The web view in the distributed profile: the integration process serves it, gathers every
process's tree through their control sockets, reads the store (Elasticsearch API) and resends
through auth's gRPC API (auth does not run in the integration process)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from runtime import AsyncioEdge
from tests.support.cluster import Cluster, cluster_env, event_ids_received
from tests.support.services import free_port
from tests.support.smtp_servers import CapturingServer
from tests.support.waiting import poll_until
from tests.support.web import csrf_of, publish_poison, request_email

pytestmark = pytest.mark.services

URL_LINE = re.compile(r"\[integration\] mailactors web view: (http://127\.0\.0\.1:\d+/web/)")


async def test_integration_serves_every_tree_the_log_and_resends_through_auth(
    tmp_path: Path, elasticsearch_url: str, rabbitmq_url: str, edge: AsyncioEdge
) -> None:
    with CapturingServer() as smtp:
        env = cluster_env(tmp_path, elasticsearch_url, rabbitmq_url, smtp.port)
        env.update({"MAILACTORS__HTTP__ENABLED": "true",
                    "MAILACTORS__HTTP__PORT": str(free_port()),
                    "MAILACTORS__SERVICE__RUN_DIR": str(tmp_path / "run")})  # fmt: skip
        async with Cluster(env, workers=1, log=tmp_path / "cluster.log").running() as cluster:
            found = [m.group(1) for line in cluster.lines if (m := URL_LINE.search(line))]
            assert found, "the integration process did not print the web view's URL"
            first = await request_email(edge, cluster.auth_port, "dee@example.com")
            async with httpx.AsyncClient(base_url=found[0], timeout=30) as web:
                page = await web.get("login")
                entered = await web.post("login", data={"csrf": csrf_of(page.text)})
                assert entered.status_code == 303
                trees = (await web.get("tree.json")).json()

                async def listed_as_sent(event_id: str) -> bool:
                    log = await web.get("emails", params={"recipient": "dee@example.com",
                                                          "status": "SENT"})  # fmt: skip
                    return f'data-event-id="{event_id}"' in log.text

                await poll_until(lambda: listed_as_sent(first), timeout=60, what="first SENT")
                email_page = await web.get(f"emails/{first}")
                nonce = re.search(r'name="nonce" value="([^"]+)"', email_page.text)
                assert nonce is not None
                resent = await web.post(f"emails/{first}/resend", data={
                    "csrf": csrf_of(email_page.text), "nonce": nonce.group(1)})  # fmt: skip
                assert resent.status_code == 303, resent.text
                second = resent.headers["location"].rsplit("/", 1)[1]
                await poll_until(lambda: listed_as_sent(second), timeout=60, what="resend SENT")
                second_page = await web.get(f"emails/{second}")

                # The latency chart, from the email server's histogram (another process).
                async def latency_drawn() -> bool:
                    charts = await web.get("charts")
                    return 'data-series="p95"' in charts.text

                await poll_until(latency_drawn, timeout=60, what="the latency chart")
                charts_page = (await web.get("charts")).text

                # A poison message on the bus: listed with its reason, then replayed (and,
                # poison still, dead-lettered again).
                await publish_poison(edge, env)
                token = csrf_of(second_page.text)

                async def dead_listed() -> bool:
                    ask = {"process": "email-server-0", "action": "dead_letters", "csrf": token}
                    page = await web.post("tree/act", data=ask)
                    return "not json at all" in page.text

                await poll_until(dead_listed, timeout=60, what="the poison in the DLQ")
                replayed = await web.post("dead-letters/replay", data={"csrf": token})
                assert replayed.status_code == 303, replayed.text
                flash = (await web.get("tree")).text
        received = event_ids_received(smtp)
    names = {p["name"] for p in trees["processes"]}
    assert names == {"integration", "auth", "email-server-0"}, trees
    assert trees["errors"] == {}
    by_name = {p["name"]: p for p in trees["processes"]}
    assert "auth/requests" in {a["path"] for a in by_name["auth"]["actors"]}
    assert by_name["email-server-0"]["queues"] is not None  # RabbitMQ's depths, via its socket
    assert second != first
    assert f'id="resent-from" href="/web/emails/{first}"' in second_page.text
    assert received[first] == 1 and received[second] == 1
    assert "replayed 1 dead letter(s)" in flash
    assert 'data-series="p50"' in charts_page and 'id="gathered"' in charts_page
    assert 'data-series="SENT"' in charts_page  # the rates, from integration's counters
