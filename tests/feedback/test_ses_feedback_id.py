"""One SES bounce or complaint published under two SNS MessageIds is applied once: SES's own
``feedbackId`` (with the recipient) names the report, not the SNS envelope around it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from actors.domain.schema import Status
from actors.feedback.ses import feedback_from_ses
from actors.testing.sns import SnsSigner, open_sns_host, ses_event, sns_notification
from tests.support.embedded import embedded_config, request, running
from tests.support.feedback import sns_settings
from tests.support.http import http_config, http_url


def test_the_source_id_is_the_feedback_id_and_recipient_where_ses_gives_one() -> None:
    bounce = ses_event("Bounce", "ev-1", "Ana@Example.org", feedback_id="fb-1")
    first = feedback_from_ses(bounce, "sns-1")
    again = feedback_from_ses(bounce, "sns-2")
    assert [r.source_id for r in first] == [r.source_id for r in again] == ["fb-1#ana@example.org"]
    assert (first[0].alias, again[0].alias) == ("sns-1", "sns-2")  # a repeat under either name
    complaint = ses_event("Complaint", "ev-1", "ana@example.org", feedback_id="fb-2")
    assert feedback_from_ses(complaint, "sns-3")[0].source_id == "fb-2#ana@example.org"
    # Without a feedbackId (a delivery has none) the SNS MessageId names the report.
    assert feedback_from_ses(ses_event("Delivery", "ev-1", "a@b.org"), "sns-4")[0].source_id == (
        "sns-4"
    )
    body = json.loads(bounce)
    del body["bounce"]["feedbackId"]
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
