"""The RabbitMQ webhook queues on the real broker: retry through the TTL queue, failed, replay."""

from __future__ import annotations

import time
import uuid

import pytest
import trio

from actors.webhooks import WebhookItem
from actors.webhooks.rabbit import RabbitWebhookQueue
from runtime import AsyncioEdge
from tests.support.webhooks import delete_webhook_queues

pytestmark = pytest.mark.services


def item(n: int, endpoint: str = "crm") -> WebhookItem:
    return WebhookItem(webhook_id=f"msg_{n}", endpoint=endpoint, event_id=f"e{n}", sequence=n,
                       body=b'{"status": "SENT"}', created_at=time.time())  # fmt: skip


async def test_retry_failed_list_and_replay(rabbitmq_url: str, edge: AsyncioEdge) -> None:
    prefix = f"test.hookq.{uuid.uuid4().hex[:8]}"
    queue = RabbitWebhookQueue(rabbitmq_url, prefix, {"crm": 2, "bi": 1})
    tool = RabbitWebhookQueue(rabbitmq_url, prefix, {"crm": 2, "bi": 1}, consume=False)
    await queue.open()
    await tool.open()
    try:
        await queue.add_many([item(1), item(2, "bi")])
        job = await queue.take("crm")
        assert job.item.webhook_id == "msg_1"
        start = trio.current_time()
        await queue.retry(job, 0.3, "HTTP 500")  # waits in the broker, not here
        with trio.fail_after(10):
            again = await queue.take("crm")
        assert trio.current_time() - start >= 0.25
        assert (again.item.webhook_id, again.item.attempts, again.item.last_error) == (
            "msg_1", 1, "HTTP 500"
        )
        await queue.give_up(again, "HTTP 500, given up")
        bi = await queue.take("bi")
        await queue.give_up(bi, "timeout")
        listed = await tool.failed()
        assert [(f.webhook_id, f.attempts) for f in listed] == [("msg_1", 2), ("msg_2", 1)]
        assert [f.webhook_id for f in await tool.failed()] == ["msg_1", "msg_2"]  # left there
        assert await tool.replay("crm") == 1
        with trio.fail_after(10):
            back = await queue.take("crm")
        assert (back.item.webhook_id, back.item.attempts) == ("msg_1", 0)
        await queue.delivered(back)
        assert [f.webhook_id for f in await tool.failed()] == ["msg_2"]
    finally:
        await queue.close()
        await tool.close()
        await delete_webhook_queues(edge, rabbitmq_url, prefix, ["crm", "bi"])
