"""A feedback status event carries the email's tags and metadata, as every status event does
(README, "Wire format"): a consumer of email.status.exchange correlates a bounce by them."""

from __future__ import annotations

from pathlib import Path

from actors.domain.schema import EmailDocument, EmailStatusEvent, Status
from actors.feedback import FeedbackKind
from tests.support.feedback_actions import kit, report


async def test_a_bounce_event_carries_the_emails_tags_and_metadata(tmp_path: Path) -> None:
    async with kit(tmp_path) as k:
        doc = EmailDocument(
            event_id="e1", recipient="ada@example.net", template="welcome",
            tags=["qa-tag", "welcome"], metadata={"customer": "c-42"},
        )  # fmt: skip
        await k.store.save_many([doc])
        await k.store.apply_status_many([EmailStatusEvent(event_id="e1", status=Status.SENT)])
        outcome = await k.actions.apply(
            report(FeedbackKind.BOUNCE, "e1", "ada@example.net", "r1", status_code="5.1.1")
        )
        assert outcome.applied
        event = await k.published()
        assert event.status is Status.BOUNCED and event.schema_version == 2
        assert event.tags == ["qa-tag", "welcome"]
        assert event.metadata == {"customer": "c-42"}
