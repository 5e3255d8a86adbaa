"""Which stored statuses become deliveries, to whom, with which id and body."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from actors.domain.schema import EmailDocument, EmailStatusEvent, Status
from actors.stores.sqlite import SqliteStore
from actors.webhooks import Routes, SqliteOutbox, WebhookEvents, event_body, webhook_id
from config import ConfigError, WebhookEndpointConfig

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def endpoint(name: str, **fields: object) -> WebhookEndpointConfig:
    return WebhookEndpointConfig(
        name=name, url=f"https://{name}.example.com/h", secret_env="S", **fields  # type: ignore[arg-type]
    )


def test_routes_by_status_name_and_category() -> None:
    routes = Routes([
        endpoint("all"),
        endpoint("sent", statuses=("SENT",)),
        endpoint("news", categories=("newsletter",), statuses=("SENT", "FAILED")),
    ])  # fmt: skip
    assert routes.endpoints_for("SENT", "newsletter") == ["all", "sent", "news"]
    assert routes.endpoints_for("FAILED", "receipts") == ["all"]
    assert routes.wants("RETRYING") and not Routes([endpoint("s", statuses=("SENT",))]).wants("X")
    with pytest.raises(ConfigError, match=r"webhooks.endpoints\[bad\].statuses.*'BOUNCD'"):
        Routes([endpoint("bad", statuses=("SENT", "BOUNCD"))])


def test_one_id_per_happening() -> None:
    sent = EmailStatusEvent(event_id="e", status=Status.SENT, occurred_at=T0)
    later_copy = EmailStatusEvent(event_id="e", status=Status.SENT, occurred_at=T0 + timedelta(1))
    assert webhook_id("a", sent) == webhook_id("a", later_copy)  # terminal: once per email
    assert webhook_id("a", sent) != webhook_id("b", sent)
    retry1 = EmailStatusEvent(event_id="e", status=Status.RETRYING, attempt=1, occurred_at=T0)
    retry2 = EmailStatusEvent(event_id="e", status=Status.RETRYING, attempt=2, occurred_at=T0)
    assert webhook_id("a", retry1) != webhook_id("a", retry2)


class TaggedDocument(EmailDocument, kw_only=True):  # what issue 17 adds to the document
    tags: list[str] = []
    metadata: dict[str, str] = {}


def test_body_carries_the_reply_and_passes_tags_and_metadata_through() -> None:
    doc = TaggedDocument(
        event_id="e", recipient="ada@example.com", template="t", category="receipts",
        tags=["order"], metadata={"orderId": "42"},
    )  # fmt: skip
    event = EmailStatusEvent(event_id="e", status=Status.FAILED, attempt=2, smtp_code=550,
                             smtp_reply="550 5.1.1 no such user", error="permanent",
                             occurred_at=T0)  # fmt: skip
    body = json.loads(event_body(doc, event, 7))
    assert body == {
        "eventId": "e", "status": "FAILED", "emailStatus": "PENDING",
        "time": "2026-12-01T12:00:00+00:00", "sequence": 7,
        "recipient": "ada@example.com", "category": "receipts", "attempt": 2, "provider": None,
        "providerMessageId": None, "smtpCode": 550, "reply": "550 5.1.1 no such user",
        "error": "permanent", "tags": ["order"], "metadata": {"orderId": "42"},
    }  # fmt: skip


async def test_what_the_store_will_apply_is_queued_and_nothing_else(tmp_path: Path) -> None:
    routes = Routes([endpoint("a", statuses=("SENT", "RETRYING")), endpoint("b")])
    doc = EmailDocument(event_id="e1", recipient="ada@example.com", template="t")
    async with SqliteStore(tmp_path / "s.db") as store, SqliteOutbox(tmp_path / "o.db") as outbox:
        await store.save_many([doc])
        events = WebhookEvents(routes, store, outbox)
        retrying = EmailStatusEvent(event_id="e1", status=Status.RETRYING, occurred_at=T0)
        sent = EmailStatusEvent(event_id="e1", status=Status.SENT, attempt=2, occurred_at=T0)
        orphan = EmailStatusEvent(event_id="nope", status=Status.SENT)
        late = EmailStatusEvent(event_id="e1", status=Status.SENDING, attempt=1)  # after SENT
        batch = [retrying, sent, orphan, late]
        await events.statuses_to_apply(batch)
        assert events.queued == 4  # RETRYING and SENT, to a and to b
        # A crash before the store write: the same batch again, the same webhook-ids.
        await events.statuses_to_apply(batch)
        assert await outbox.counts() == {"a": {"pending": 2}, "b": {"pending": 2}}
        results = await store.apply_status_many(batch)
        assert [r.outcome.value for r in results] == ["applied", "applied", "not_found", "ignored"]
        # After the store write (a crash before the ack): the batch again queues nothing.
        before = events.queued
        await events.statuses_to_apply(batch)
        assert events.queued == before
        first = await outbox.take("a")
        assert json.loads(first.item.body)["status"] == "RETRYING"
        # The email's next delivery to "a" waits until this one is settled (order per email).
        await outbox.delivered(first)
        second = await outbox.take("a")
        body = json.loads(second.item.body)
        assert body["status"] == "SENT" and body["attempt"] == 2
        assert second.item.sequence > first.item.sequence


def test_each_feedback_report_is_its_own_webhook_and_names_its_address() -> None:
    from actors.domain.schema import FeedbackDetail

    def bounce(recipient: str, source_id: str) -> EmailStatusEvent:
        detail = FeedbackDetail(kind="bounce", recipient=recipient, source="ses",
                                source_id=source_id, bounce_type="hard")  # fmt: skip
        return EmailStatusEvent(event_id="e", status=Status.BOUNCED, occurred_at=T0,
                                schema_version=2, feedback=detail)  # fmt: skip

    cc, own = bounce("cc@example.com", "fb-1#cc@example.com"), bounce("ada@example.com", "fb-2")
    # A cc's bounce, then the recipient's: two happenings, not a repeat of one.
    assert webhook_id("a", cc) != webhook_id("a", own)
    assert webhook_id("a", cc) == webhook_id("a", bounce("cc@example.com", "fb-1#cc@example.com"))
    doc = EmailDocument(event_id="e", recipient="ada@example.com", template="t",
                        status=Status.SENT)  # fmt: skip
    body = json.loads(event_body(doc, cc, 1))
    assert (body["status"], body["emailStatus"], body["recipient"]) == (
        "BOUNCED", "SENT", "ada@example.com",
    )  # fmt: skip
    assert body["feedback"]["recipient"] == "cc@example.com"
    assert body["feedback"]["bounceType"] == "hard" and body["feedback"]["sourceId"]
