"""SES events over SNS against the running embedded system: signed messages POSTed over HTTP,
the signing certificate served over HTTPS by a local host that only the test config allows;
the documents' history and the suppression list checked afterwards."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import trio

from actors.domain.schema import EmailDocument, Status
from actors.email_server.suppression import SuppressionList
from actors.profiles.embedded import Embedded
from actors.testing.sns import (
    SnsHost,
    SnsSigner,
    fresh,
    open_sns_host,
    ses_event,
    sns_notification,
    sns_subscription,
)
from tests.support.embedded import embedded_config, request, running
from tests.support.feedback import sns_settings
from tests.support.http import http_config, http_url
from tests.support.waiting import poll_until


class Setup:
    def __init__(self, app: Embedded, sns: SnsHost, signer: SnsSigner, client: Any) -> None:
        self.app = app
        self.sns = sns
        self.signer = signer
        self.client = client
        self.url = http_url(app) + "/feedback/ses"
        self.suppression = SuppressionList(app.config.email_server.idempotency_path)

    async def sent(self, to: str = "ana@example.org", category: str = "transactional") -> str:
        accepted = await self.app.request(request(to=to, category=category))
        doc = await self.app.wait_terminal(accepted.event_id)
        assert doc.status is Status.SENT, doc.error
        return str(accepted.event_id)

    async def post(self, fields: dict[str, str] | bytes) -> httpx.Response:
        body = fields if isinstance(fields, bytes) else json.dumps(fields).encode()
        return await self.client.post(
            self.url, content=body, headers={"content-type": "text/plain; charset=UTF-8"}
        )

    async def notify(self, kind: str, event_id: str, to: str, **kw: Any) -> httpx.Response:
        message_id = kw.pop("message_id", fresh())
        sent = kw.pop("sent", None)
        version = kw.pop("version", "2")
        event = ses_event(kind, event_id, to, **kw)
        return await self.post(
            sns_notification(
                event, self.sns.cert_url, self.signer, message_id=message_id, sent=sent,
                version=version,
            )
        )  # fmt: skip

    async def document(self, event_id: str) -> EmailDocument:
        doc = await self.app.store.get(event_id)
        assert doc is not None
        return doc

    async def wait_status(self, event_id: str, status: Status) -> EmailDocument:
        async def reached() -> bool:
            return (await self.document(event_id)).status is status

        await poll_until(reached, timeout=10, what=f"{event_id} {status}")
        return await self.document(event_id)

    def refusals(self) -> dict[str, int]:
        extra = self.app.system.snapshot().by_path()["feedback/sink"].extra or {}
        counts = extra["counts"]
        assert isinstance(counts, dict)
        return counts


@asynccontextmanager
async def feedback_system(tmp_path: Path, **feedback: Any) -> AsyncIterator[Setup]:
    signer = SnsSigner()
    async with open_sns_host(tmp_path / "sns", signer) as sns:
        ses = sns_settings(sns, **feedback.pop("ses", {}))
        feedback.setdefault("ledger_path", str(tmp_path / "feedback.sqlite3"))
        config = embedded_config(tmp_path, http=http_config(), feedback={"ses": ses, **feedback})
        async with running(config) as app, httpx.AsyncClient(timeout=30) as client:
            setup = Setup(app, sns, signer, client)
            await setup.suppression.open()
            try:
                yield setup
            finally:
                await setup.suppression.close()


async def test_a_hard_bounce_ends_bounced_and_suppresses_the_address(tmp_path: Path) -> None:
    async with feedback_system(tmp_path) as s:
        event_id = await s.sent("ana@example.org")
        reply = await s.notify("Bounce", event_id, "ana@example.org")
        assert reply.status_code == 200, reply.text
        assert reply.json()["records"] == ["applied"]
        doc = await s.wait_status(event_id, Status.BOUNCED)
        record = doc.history[-1]
        assert record.status is Status.BOUNCED and record.feedback is not None
        assert (record.feedback.bounce_type, record.feedback.status_code) == ("hard", "5.1.1")
        assert record.feedback.source == "ses" and "550" in (record.feedback.diagnostic or "")
        assert doc.error is not None and doc.error.startswith("bounced (hard) by ses: 5.1.1")
        entry = s.suppression.lookup("ANA@example.org", "anything")
        assert entry is not None and entry.source == "bounce" and entry.category == ""
        assert entry.event_id == event_id and "hard bounce via ses" in entry.reason
        assert s.sns.count("/SimpleNotificationService") == 1  # fetched once...
        again = await s.sent("bob@example.org")
        await s.notify("Delivery", again, "bob@example.org")
        await s.wait_status(again, Status.DELIVERED)
        assert s.sns.count("/SimpleNotificationService") == 1  # ... then cached
        # The address is not contacted again.
        later = await s.app.request(request(to="ana@example.org"))
        assert (await s.app.wait_terminal(later.event_id)).status is Status.SUPPRESSED


async def test_a_complaint_suppresses_its_category_only(tmp_path: Path) -> None:
    async with feedback_system(tmp_path) as s:
        event_id = await s.sent("cat@example.org", category="newsletter")
        assert (await s.notify("Complaint", event_id, "cat@example.org")).status_code == 200
        doc = await s.wait_status(event_id, Status.COMPLAINED)
        assert doc.history[-1].feedback is not None
        assert doc.history[-1].feedback.feedback_type == "abuse"
        news = await s.app.request(request(to="cat@example.org", category="newsletter"))
        reset = await s.app.request(request(to="cat@example.org", category="transactional"))
        assert (await s.app.wait_terminal(news.event_id)).status is Status.SUPPRESSED
        assert (await s.app.wait_terminal(reset.event_id)).status is Status.SENT


async def test_history_in_event_time_with_late_and_repeated_reports(tmp_path: Path) -> None:
    async with feedback_system(tmp_path) as s:
        event_id = await s.sent("dan@example.org")
        t = datetime.now(UTC)
        delivered = await s.notify(
            "Delivery", event_id, "dan@example.org", when=t, message_id="m-delivery"
        )
        assert delivered.json()["records"] == ["applied"]
        await s.wait_status(event_id, Status.DELIVERED)
        # SNS retries a message it thinks was lost: same MessageId, applied once.
        repeat = await s.notify(
            "Delivery", event_id, "dan@example.org", when=t, message_id="m-delivery"
        )
        assert (repeat.status_code, repeat.json()["records"]) == (200, ["repeat"])
        # A delay that happened before the delivery arrives after it (configuration-set form).
        late = await s.notify(
            "DeliveryDelay", event_id, "dan@example.org", when=t - timedelta(minutes=5),
            form="eventType",
        )  # fmt: skip
        assert late.json()["records"] == ["applied"]

        async def both() -> bool:
            doc = await s.document(event_id)
            return len([r for r in doc.history if r.feedback is not None]) == 2

        await poll_until(both, timeout=10, what="the late delay in the history")
        doc = await s.document(event_id)
        assert doc.status is Status.DELIVERED  # the late delay did not move it back
        assert [r.status for r in doc.history] == [Status.SENT, Status.DELAYED, Status.DELIVERED]
        assert s.refusals().get("repeat") == 1


async def test_soft_bounces_suppress_after_the_limit_and_repeats_count_once(
    tmp_path: Path,
) -> None:
    async with feedback_system(tmp_path, soft_bounce_limit=3) as s:
        ids = [await s.sent("eve@example.org") for _ in range(3)]
        for event_id in ids[:2]:
            reply = await s.notify(
                "Bounce", event_id, "eve@example.org", bounce_type="Transient", status="4.2.2",
                message_id=f"soft-{event_id}",
            )  # fmt: skip
            assert reply.json()["records"] == ["applied"]
        repeat = await s.notify(
            "Bounce", ids[0], "eve@example.org", bounce_type="Transient", status="4.2.2",
            message_id=f"soft-{ids[0]}",
        )  # fmt: skip
        assert repeat.json()["records"] == ["repeat"]
        assert s.suppression.lookup("eve@example.org") is None  # two, not three
        await s.notify(
            "Bounce", ids[2], "eve@example.org", bounce_type="Undetermined", status="4.0.0"
        )
        entry = s.suppression.lookup("eve@example.org")
        assert entry is not None and entry.reason.startswith("3 soft bounces in 7 days")
        doc = await s.wait_status(ids[0], Status.BOUNCED)
        assert doc.history[-1].feedback is not None
        assert doc.history[-1].feedback.bounce_type == "soft"


async def test_a_reject_ends_failed_and_suppresses_nothing(tmp_path: Path) -> None:
    async with feedback_system(tmp_path) as s:
        event_id = await s.sent("fay@example.org")
        assert (await s.notify("Reject", event_id, "fay@example.org")).status_code == 200
        doc = await s.wait_status(event_id, Status.FAILED)
        assert doc.error == "rejected by ses: Bad content"
        assert s.suppression.lookup("fay@example.org") is None


async def test_signature_version_1_and_a_subject(tmp_path: Path) -> None:
    async with feedback_system(tmp_path) as s:
        event_id = await s.sent("gus@example.org")
        body = sns_notification(
            ses_event("Delivery", event_id, "gus@example.org"), s.sns.cert_url, s.signer,
            message_id=fresh(), version="1", subject="Amazon SES Email Event Notification",
        )  # fmt: skip
        assert (await s.post(body)).status_code == 200
        await s.wait_status(event_id, Status.DELIVERED)


async def test_subscription_confirmed_only_through_an_allowed_host(tmp_path: Path) -> None:
    async with feedback_system(tmp_path) as s:
        good = sns_subscription(f"{s.sns.url}/confirm?Token=abc", s.sns.cert_url, s.signer)
        reply = await s.post(good)
        assert (reply.status_code, reply.json()["status"]) == (200, "confirmed")
        assert s.sns.count("/confirm") == 1
        evil = sns_subscription(
            "https://attacker.example/confirm?Token=abc", s.sns.cert_url, s.signer
        )
        refused = await s.post(evil)
        assert (refused.status_code, refused.json()["status"]) == (403, "subscribe_host")
        plain = sns_subscription(
            s.sns.url.replace("https", "http") + "/confirm", s.sns.cert_url, s.signer
        )
        assert (await s.post(plain)).status_code == 403
        assert s.sns.count("/confirm") == 1
        bye = sns_subscription(
            f"{s.sns.url}/confirm", s.sns.cert_url, s.signer, kind="UnsubscribeConfirmation"
        )
        assert (await s.post(bye)).json()["status"] == "unsubscribed"


async def test_forged_replayed_and_malformed_messages_change_nothing(tmp_path: Path) -> None:
    async with feedback_system(tmp_path) as s:
        event_id = await s.sent("hal@example.org")
        bounce = ses_event("Bounce", event_id, "hal@example.org")

        def signed(**kw: Any) -> dict[str, str]:
            return sns_notification(bounce, s.sns.cert_url, s.signer, message_id=fresh(), **kw)

        tampered = signed()
        tampered["Message"] = tampered["Message"].replace("hal@", "ivy@")
        other_signer = SnsSigner()  # a valid certificate, but not the one at the URL
        forged = sns_notification(bounce, s.sns.cert_url, other_signer, message_id=fresh())
        elsewhere = sns_notification(
            bounce, "https://sns.eu-west-1.amazonaws.com.evil.example/c.pem", s.signer,
            message_id=fresh(),
        )  # fmt: skip
        userinfo = sns_notification(
            bounce, f"https://sns.eu-west-1.amazonaws.com@{s.sns.url[8:]}/c.pem", s.signer,
            message_id=fresh(),
        )  # fmt: skip
        not_pem = sns_notification(bounce, f"{s.sns.url}/confirm", s.signer, message_id=fresh())
        old = signed(sent=datetime.now(UTC) - timedelta(hours=2))
        future = signed(sent=datetime.now(UTC) + timedelta(hours=1))
        wrong_topic = dict(signed())
        wrong_topic["TopicArn"] = "arn:aws:sns:eu-west-1:999999999999:other"
        unknown_version = dict(signed())
        unknown_version["SignatureVersion"] = "3"
        cases: list[tuple[Any, int, str]] = [
            (tampered, 403, "bad_signature"),
            (forged, 403, "bad_signature"),
            (elsewhere, 403, "cert_host"),
            (userinfo, 403, "cert_host"),
            (not_pem, 403, "cert_host"),
            (old, 403, "old_message"),
            (future, 403, "old_message"),
            (wrong_topic, 403, "topic"),
            (unknown_version, 403, "bad_signature"),
            (b"{not json", 400, "malformed"),
            (b"[1, 2]", 400, "malformed"),
            (json.dumps({"Type": "Notification"}).encode(), 400, "malformed"),
            (b"[" * 100_000, 400, "malformed"),
        ]
        for body, status, reason in cases:
            reply = await s.post(body)
            assert (reply.status_code, reply.json()["status"]) == (status, reason), body
        huge = await s.post(b"x" * (2 * 1024 * 1024))
        assert huge.status_code == 413
        # The useSend #440 string to sign (no newline after the last value) is not AWS's.
        assert await _signed_without_trailing_newline(s, bounce) == 403
        # Nothing happened to the email or the address; every refusal was counted.
        assert (await s.document(event_id)).status is Status.SENT
        assert s.suppression.lookup("hal@example.org") is None
        assert s.suppression.lookup("ivy@example.org") is None
        counts = s.refusals()
        assert counts["bad_signature"] == 4 and counts["cert_host"] == 3
        assert counts["old_message"] == 2 and counts["malformed"] == 4
        assert s.sns.count("/c.pem") == 0 and s.sns.count("/confirm") == 0


async def _signed_without_trailing_newline(s: Setup, message: str) -> int:
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    fields = sns_notification(message, s.sns.cert_url, s.signer, message_id=fresh())
    keys = ("Message", "MessageId", "Timestamp", "TopicArn", "Type")
    text = "\n".join(f"{k}\n{fields[k]}" for k in keys)  # the bug: no final "\n"
    sig = s.signer.key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    fields["Signature"] = base64.b64encode(sig).decode()
    return (await s.post(fields)).status_code


async def test_reports_about_other_addresses_or_emails_are_ignored(tmp_path: Path) -> None:
    async with feedback_system(tmp_path) as s:
        event_id = await s.sent("jon@example.org")
        # Authentic, but the bounce names an address that is not the email's recipient.
        stranger = await s.notify("Bounce", event_id, "victim@example.org")
        assert (stranger.status_code, stranger.json()["records"]) == (200, ["wrong_recipient"])
        unknown = await s.notify("Complaint", "no-such-email", "jon@example.org")
        assert unknown.json()["records"] == ["unknown_email"]
        # An SES event that is not ours (no Message-ID of ours): acknowledged, counted.
        foreign = json.loads(ses_event("Bounce", event_id, "jon@example.org"))
        foreign["mail"]["commonHeaders"]["messageId"] = "<not ours>"
        foreign["mail"]["headers"] = []
        body = sns_notification(json.dumps(foreign), s.sns.cert_url, s.signer, message_id=fresh())
        reply = await s.post(body)
        assert (reply.status_code, reply.json()["status"]) == (200, "ignored")
        assert s.suppression.lookup("victim@example.org") is None
        assert s.suppression.lookup("jon@example.org") is None
        assert (await s.document(event_id)).status is Status.SENT
        counts = s.refusals()
        assert counts["wrong_recipient"] == 1 and counts["unknown_email"] == 1
        assert counts["malformed_event"] == 1


async def test_a_flood_of_notifications_loses_nothing(tmp_path: Path) -> None:
    n = 150
    async with feedback_system(tmp_path) as s:
        ids = []
        for i in range(n):
            accepted = await s.app.request(request(to=f"user{i}@example.org"))
            ids.append(str(accepted.event_id))
        for event_id in ids:
            assert (await s.app.wait_terminal(event_id)).status is Status.SENT
        bodies = [
            sns_notification(
                ses_event("Delivery", event_id, f"user{i}@example.org"), s.sns.cert_url,
                s.signer, message_id=f"flood-{i}",
            )
            for i, event_id in enumerate(ids)
        ]  # fmt: skip
        statuses: list[int] = []
        limit = trio.CapacityLimiter(25)

        async def post(body: dict[str, str]) -> None:
            async with limit:
                statuses.append((await s.post(body)).status_code)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for body in bodies + bodies[:30]:  # and 30 repeats, as SNS retries would
                nursery.start_soon(post, body)
        elapsed = trio.current_time() - start
        assert statuses.count(200) == n + 30, sorted(set(statuses))

        async def all_delivered() -> bool:
            for event_id in ids:
                if (await s.document(event_id)).status is not Status.DELIVERED:
                    return False
            return True

        await poll_until(all_delivered, timeout=20, what="every email DELIVERED")
        assert s.refusals()["repeat"] == 30
        print(f"{n + 30} SNS notifications in {elapsed:.2f}s ({(n + 30) / elapsed:.0f}/s)")


async def test_a_complaint_rate_over_the_threshold_pauses_the_category(tmp_path: Path) -> None:
    settings = {
        "rate_min_emails": 4,
        "complaint_rate_threshold": 0.1,
        "pause_on_threshold": True,
        "rate_check_s": 0.0,
    }
    async with feedback_system(tmp_path, **settings) as s:
        ids = [await s.sent(f"p{i}@example.org", category="promo") for i in range(5)]
        await s.sent("q@example.org", category="transactional")
        assert (await s.notify("Complaint", ids[0], "p0@example.org")).status_code == 200
        entry = s.suppression.lookup("*", "promo")
        assert entry is not None and "complaint rate 20.00%" in entry.reason
        later = await s.app.request(request(to="new@example.org", category="promo"))
        other = await s.app.request(request(to="new@example.org", category="transactional"))
        paused = await s.app.wait_terminal(later.event_id)
        assert paused.status is Status.SUPPRESSED and "category paused" in (paused.error or "")
        assert (await s.app.wait_terminal(other.event_id)).status is Status.SENT
        # What `supervisor.py suppression remove '*' --category promo` does: resumed.
        assert await s.suppression.remove("*", "promo")
        resumed = await s.app.request(request(to="new@example.org", category="promo"))
        assert (await s.app.wait_terminal(resumed.event_id)).status is Status.SENT


async def test_reports_for_copies_suppress_them_and_only_the_recipient_moves_the_status(
    tmp_path: Path,
) -> None:
    async with feedback_system(tmp_path) as s:
        accepted = await s.app.request(
            request(to="kim@example.org", cc=["Lou@example.org"], bcc=["max@example.org"])
        )
        event_id = str(accepted.event_id)
        assert (await s.app.wait_terminal(event_id)).status is Status.SENT
        cc = await s.notify("Bounce", event_id, "lou@example.org")
        bcc = await s.notify("Complaint", event_id, "max@example.org")
        assert (cc.json()["records"], bcc.json()["records"]) == (["applied"], ["applied"])
        entry = s.suppression.lookup("lou@example.org", "anything")
        assert entry is not None and entry.event_id == event_id and entry.category == ""
        assert s.suppression.lookup("max@example.org", "transactional") is not None
        assert s.suppression.lookup("kim@example.org") is None

        async def recorded(n: int) -> bool:
            doc = await s.document(event_id)
            return len([r for r in doc.history if r.feedback is not None]) == n

        await poll_until(lambda: recorded(2), timeout=10, what="the copies' reports")
        doc = await s.document(event_id)
        assert doc.status is Status.SENT and doc.error is None
        assert {(r.status, r.feedback.recipient) for r in doc.history if r.feedback} == {
            (Status.BOUNCED, "lou@example.org"), (Status.COMPLAINED, "max@example.org"),
        }  # fmt: skip
        # The recipient's own bounce moves the email.
        assert (await s.notify("Bounce", event_id, "kim@example.org")).status_code == 200
        doc = await s.wait_status(event_id, Status.BOUNCED)
        assert doc.error is not None and "kim@example.org" in doc.error
        # An address the email was not sent to is still refused.
        stranger = await s.notify("Bounce", event_id, "ned@example.org")
        assert stranger.json()["records"] == ["wrong_recipient"]
        assert s.suppression.lookup("ned@example.org") is None
