"""How often the email servers reload the shared suppression list (Elasticsearch store) is
``email_server.suppression_refresh_s``: a bounce or an operator's entry made elsewhere stops
this worker's sends within it; a bad value stops start-up naming the setting."""

from __future__ import annotations

import uuid

import httpx
import pytest

from actors.email_server.safeguards import open_send_guards
from actors.email_server.suppression_elasticsearch import (
    ElasticsearchSuppression,
    suppression_index,
)
from config import ConfigError, load_config
from tests.support.feedback import delete_indices
from tests.support.waiting import poll_until


@pytest.mark.services
async def test_a_worker_reloads_the_shared_list_as_often_as_configured(
    elasticsearch_url: str,
) -> None:
    claims = f"claims-{uuid.uuid4().hex[:8]}"
    config = load_config("distributed", env={}, overrides={
        "store": {"kind": "elasticsearch", "url": elasticsearch_url},
        "email_server": {"claims_index": claims, "suppression_refresh_s": 0.1},
    })  # fmt: skip
    index = suppression_index(claims)
    try:
        async with (
            open_send_guards(config) as guards,
            ElasticsearchSuppression(elasticsearch_url, index) as elsewhere,
        ):
            worker = guards.suppression
            assert worker is not None and worker.lookup("gone@example.org") is None
            await elsewhere.add("gone@example.org", "hard bounce (another process)")
            # Searchable now: what is waited for below is the worker's reload alone.
            async with httpx.AsyncClient() as es:
                (await es.post(f"{elasticsearch_url}/{index}/_refresh")).raise_for_status()

            def seen() -> bool:
                return worker.lookup("gone@example.org") is not None

            # Well under the 2 s default: only the configured 0.1 s reload gets there.
            await poll_until(seen, timeout=1.5, what="the entry in the worker's copy")
    finally:
        await delete_indices(elasticsearch_url, index)


@pytest.mark.parametrize("value", [0, -1.0, "soon"])
def test_a_bad_refresh_interval_names_the_setting(value: object) -> None:
    for profile in ("embedded", "distributed"):
        with pytest.raises(ConfigError, match=r"^email_server\.suppression_refresh_s: expected"):
            load_config(profile, env={}, overrides={
                "email_server": {"suppression_refresh_s": value},
            })  # fmt: skip
    env = {"MAILACTORS__EMAIL_SERVER__SUPPRESSION_REFRESH_S": "0"}
    with pytest.raises(ConfigError, match=r"suppression_refresh_s.*MAILACTORS__EMAIL_SERVER"):
        load_config("distributed", env=env)
    assert load_config("distributed", env={}).email_server.suppression_refresh_s == 2.0
