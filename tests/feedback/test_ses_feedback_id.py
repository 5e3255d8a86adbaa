"""One SES bounce or complaint published under two SNS MessageIds is applied once: SES's own
``feedbackId`` (with the recipient) names the report, not the SNS envelope around it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from actors.domain.schema import Status
from actors.feedback.ses import feedback_from_ses
from actors.testing.sns import SnsSigner, open_sns_host, ses_event, sns_notification
from tests.support.embedded import embedded_config, request, running
from tests.support.feedback import sns_settings
from tests.support.http import http_config, http_url
from tests.support.waiting import poll_until


def test_the_source_id_is_the_feedback_id_and_recipient_where_ses_gives_one() -> None:
    bounce = ses_event("Bounce", "ev-1", "Ana@Example.org", feedback_id="fb-1")
    first = feedback_from_ses(bounce, "sns-1")
    again = feedback_from_ses(bounce, "sns-2")
    assert [r.source_id for r in first] == [r.source_id for r in again] == ["fb-1#ana@example.org"]
    assert (first[0].alias, again[0].alias) == ("sns-1", "sns-2")  # a repeat under either name
    complaint = ses_event("Complaint", "ev-1", "ana@example.org", feedback_id="fb-2")
    assert feedback_from_ses(complaint, "sns-3")[0].source_id == "fb-2#ana@example.org"
    # Without a feedbackId (a delivery, a delay, a reject have none) SES's mail.messageId,
    # the event type and time, and the recipient name the report; the SNS MessageId is its
    # alias.
    when = datetime(2026, 12, 1, 12, 0, 0, 123000, tzinfo=UTC)
    delivery = ses_event("Delivery", "ev-1", "A@b.org", when=when)
    ses_id = json.loads(delivery)["mail"]["messageId"]
    (first,) = feedback_from_ses(delivery, "sns-4")
    (again,) = feedback_from_ses(delivery, "sns-4b")
    assert first.source_id == again.source_id == (
        f"{ses_id}#Delivery#2026-12-01T12:00:00.123000+00:00#a@b.org"
    )
    assert (first.alias, again.alias) == ("sns-4", "sns-4b")
    later = feedback_from_ses(ses_event("DeliveryDelay", "ev-1", "a@b.org", when=when), "s")
    assert later[0].source_id == f"{ses_id}#DeliveryDelay#2026-12-01T12:00:00.123000+00:00#a@b.org"
    # Not SES's (no mail.messageId, no feedbackId): the SNS MessageId names the report.
    body = json.loads(bounce)
    del body["bounce"]["feedbackId"]
    del body["mail"]["messageId"]
    assert feedback_from_ses(json.dumps(body), "sns-5")[0].source_id == "sns-5"


async def test_a_bounce_under_two_sns_message_ids_is_applied_once(tmp_path: Path) -> None:
    signer = SnsSigner()
    async with open_sns_host(tmp_path / "sns", signer) as sns:
        config = embedded_config(tmp_path, http=http_config(), feedback={
            "ses": sns_settings(sns), "ledger_path": str(tmp_path / "feedback.sqlite3"),
        })  # fmt: skip
        async with running(config) as app, httpx.AsyncClient(timeout=30) as client:
            accepted = await app.request(request(to="ivy@example.org"))
            assert (await app.wait_terminal(accepted.event_id)).status is Status.SENT
            event = ses_event("Bounce", accepted.event_id, "ivy@example.org",
                              feedback_id="0100018c-bounce-ivy")  # fmt: skip
            records = []
            for message_id in ("sns-first", "sns-second"):
                fields = sns_notification(event, sns.cert_url, signer, message_id=message_id)
                reply = await client.post(
                    http_url(app) + "/feedback/ses", content=json.dumps(fields).encode(),
                    headers={"content-type": "text/plain; charset=UTF-8"},
                )  # fmt: skip
                assert reply.status_code == 200, reply.text
                records.append(reply.json()["records"])
            # The same SNS MessageId is a repeat too, whatever its message says.
            renamed = ses_event("Bounce", accepted.event_id, "ivy@example.org",
                                feedback_id="0100018c-bounce-ivy-renamed")  # fmt: skip
            fields = sns_notification(renamed, sns.cert_url, signer, message_id="sns-first")
            reply = await client.post(http_url(app) + "/feedback/ses",
                                      content=json.dumps(fields).encode())  # fmt: skip
            records.append(reply.json()["records"])
            assert records == [["applied"], ["repeat"], ["repeat"]]
            doc = await app.store.get(accepted.event_id)
            assert doc is not None and doc.status is Status.BOUNCED
            assert [r.status for r in doc.history].count(Status.BOUNCED) == 1
            # A different bounce of the same email (a new feedbackId) is still its own report.
            other = ses_event("Bounce", accepted.event_id, "ivy@example.org",
                              feedback_id="0100018c-bounce-ivy-2")  # fmt: skip
            fields = sns_notification(other, sns.cert_url, signer, message_id="sns-third")
            reply = await client.post(http_url(app) + "/feedback/ses",
                                      content=json.dumps(fields).encode())  # fmt: skip
            assert reply.json()["records"] == ["applied"]


async def test_deliveries_delays_and_rejects_under_new_sns_message_ids_count_once(
    tmp_path: Path,
) -> None:
    signer = SnsSigner()
    async with open_sns_host(tmp_path / "sns", signer) as sns:
        config = embedded_config(tmp_path, http=http_config(), feedback={
            "ses": sns_settings(sns), "ledger_path": str(tmp_path / "feedback.sqlite3"),
        })  # fmt: skip
        async with running(config) as app, httpx.AsyncClient(timeout=30) as client:

            async def post(event: str, message_id: str) -> Any:
                fields = sns_notification(event, sns.cert_url, signer, message_id=message_id)
                reply = await client.post(
                    http_url(app) + "/feedback/ses", content=json.dumps(fields).encode(),
                    headers={"content-type": "text/plain; charset=UTF-8"},
                )  # fmt: skip
                assert reply.status_code == 200, reply.text
                return reply.json()["records"]

            delivered = (await app.request(request(to="una@example.org"))).event_id
            rejected = (await app.request(request(to="val@example.org"))).event_id
            for event_id in (delivered, rejected):
                assert (await app.wait_terminal(event_id)).status is Status.SENT
            t = datetime.now(UTC)
            events = [
                ses_event("DeliveryDelay", delivered, "una@example.org", when=t),
                ses_event("DeliveryDelay", delivered, "una@example.org",
                          when=t + timedelta(minutes=1)),  # a second delay: its own report
                ses_event("Delivery", delivered, "una@example.org", when=t + timedelta(minutes=2)),
                ses_event("Reject", rejected, "val@example.org", when=t),
            ]  # fmt: skip
            # Each published twice, under two SNS MessageIds (SES retrying, or two topics).
            records = [[await post(e, f"sns-{i}-{n}") for n in (1, 2)]
                       for i, e in enumerate(events)]  # fmt: skip
            assert records == [[["applied"], ["repeat"]]] * 4

            async def reports(event_id: str) -> list[Status]:
                doc = await app.store.get(event_id)
                assert doc is not None
                return [r.status for r in doc.history if r.feedback is not None]

            async def stored() -> bool:
                return len(await reports(delivered)) >= 3 and len(await reports(rejected)) >= 1

            await poll_until(stored, timeout=10, what="the reports in the documents")
            assert await reports(delivered) == [Status.DELAYED, Status.DELAYED, Status.DELIVERED]
            assert await reports(rejected) == [Status.FAILED]
            for event_id, status in ((delivered, Status.DELIVERED), (rejected, Status.FAILED)):
                doc = await app.store.get(event_id)
                assert doc is not None and doc.status is status
            counts = app.system.snapshot().by_path()["feedback/sink"].extra["counts"]
            assert counts == {"delay": 2, "delivery": 1, "reject": 1, "repeat": 4}, counts
