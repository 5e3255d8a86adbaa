"""The feedback sink: what a bounce, a complaint, a delivery or a delay does, before it is
acknowledged to whoever reported it.

For each :class:`~actors.feedback.events.Feedback` record, in this order:

1. It must name an email we sent to that address (its recipient, a cc or a bcc): the
   document is read from the store; an unknown eventId or another address is ignored
   with a log line and a metric (``mailactors_feedback_refused_total``), never acted on:
   a forged or misrouted report cannot suppress an address that is not in the email.
   A copy's report (cc, bcc) acts on its address and is kept in the email's history
   (its ``feedback.recipient`` says which address); the email's status and the rates
   (step 4) follow its recipient's reports only.
2. A report already applied (same source, report id, kind and recipient; the
   ledger remembers it durably) is acknowledged and nothing more.
3. Actions, durable before the report is acknowledged: a hard bounce suppresses the
   address for every category; a complaint for the email's category (or every
   category: ``feedback.complaint_scope``); soft and undetermined bounces are
   counted in the ledger and suppress after ``soft_bounce_limit`` in
   ``soft_bounce_window_s``. A reject, a delivery or a delay suppresses nothing.
4. For a bounce or a complaint, the rates of the email's category are checked (at
   most every ``rate_check_s``): over a threshold, a warning, and with
   ``pause_on_threshold`` the category is paused. The rates of the recipient's domain
   are checked too, from counts kept in this process (:meth:`check_domain_rates`): over a
   threshold, a warning.
5. The status event (BOUNCED, COMPLAINED, DELIVERED, DELAYED; FAILED for a reject)
   is published on the status exchange, like the email server's, so integration
   stays the only writer of documents and orders it by event time; then the ledger
   marks the report applied.

A failure at any step raises (the store or the bus unavailable): the source must
not acknowledge the report, and its retry finds every action idempotent.

A category is paused by a suppression entry for the address ``*`` in that category
(``CATEGORY_PAUSE``): the email server looks it up beside the recipient, so every
email of the category ends SUPPRESSED with the reason, in every worker, until an
operator removes it (``supervisor.py suppression remove '*' --category NAME``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import msgspec
import trio

from actors.domain.edges import Bus, SearchQuery, Store
from actors.domain.schema import (
    STATUS_EVENT_VERSION,
    EmailDocument,
    EmailStatusEvent,
    FeedbackDetail,
    Status,
)
from actors.email_server.suppression import (
    ALL_CATEGORIES,
    CATEGORY_PAUSE,
    Suppressions,
    normalize,
)
from actors.feedback.events import BounceType, Feedback, FeedbackKind, Outcome
from actors.feedback.ledger import FeedbackLedger
from actors.telemetry.metrics import FeedbackMetrics
from config import FeedbackConfig

__all__ = ["STATUS_OF", "FeedbackActions", "Outcome"]

log = logging.getLogger("mailactors.feedback")

STATUS_OF = {
    FeedbackKind.BOUNCE: Status.BOUNCED,
    FeedbackKind.COMPLAINT: Status.COMPLAINED,
    FeedbackKind.DELIVERY: Status.DELIVERED,
    FeedbackKind.DELAY: Status.DELAYED,
    FeedbackKind.REJECT: Status.FAILED,
}
# The statuses of emails that left: the denominator of the rates.
_SENT_LIKE = (Status.SENT, Status.DELIVERED, Status.DELAYED, Status.BOUNCED, Status.COMPLAINED)


class FeedbackActions:
    """:class:`~actors.feedback.events.FeedbackSink` over the store, the bus, the suppression
    list and the ledger. One per process that takes feedback (in its feedback actor)."""

    def __init__(
        self,
        settings: FeedbackConfig,
        store: Store,
        bus: Bus,
        suppression: Suppressions,
        ledger: FeedbackLedger,
        metrics: FeedbackMetrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.suppression = suppression
        self.ledger = ledger
        self.metrics = metrics
        self.counts: dict[str, int] = {}
        self._checked: dict[str, float] = {}  # category -> trio time of its last rate check
        self.paused: dict[str, str] = {}  # categories this process paused -> why
        metrics.by_domain.window_s = settings.rate_window_s
        # While the per-domain window is filled from the store: the reports applied
        # meanwhile (counted live; the store may show them already).
        self._live: set[tuple[str, str, str]] | None = None
        self.rebuilt_from: int | None = None  # emails the window was filled from

    async def report(self, feedback: Feedback) -> Outcome:
        return await self.apply(feedback)

    def refuse(self, source: str, reason: str) -> None:
        """Count a report refused or ignored (sources call it for what they refuse)."""
        self.metrics.refused.labels(source, reason).inc()
        self.counts[reason] = self.counts.get(reason, 0) + 1

    async def apply(self, fb: Feedback) -> Outcome:
        ids = {"event_id": fb.event_id}
        when = fb.occurred_at
        # UTC everywhere after this: the ledger compares times as ISO text.
        when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
        fb = msgspec.structs.replace(fb, occurred_at=when)
        doc = await self.store.get(fb.event_id)
        if doc is None:
            log.warning("%s %s ignored: no email with this eventId", fb.source, fb.kind, extra=ids)
            self.refuse(fb.source, "unknown_email")
            return Outcome(False, "unknown_email")
        if not fb.recipient.strip():
            # A redacted report (an ARF without Original-Rcpt-To, as mailbox providers send
            # them): about the email's one address; with copies nobody can say whose.
            if doc.cc or doc.bcc:
                log.warning("%s %s ignored: the address is redacted and the email had copies",
                            fb.source, fb.kind, extra=ids)  # fmt: skip
                self.refuse(fb.source, "redacted_recipient")
                return Outcome(False, "redacted_recipient")
            fb = msgspec.structs.replace(fb, recipient=doc.recipient)
        address = normalize(fb.recipient)
        if address not in {normalize(a) for a in (doc.recipient, *doc.cc, *doc.bcc)}:
            log.warning(
                "%s %s ignored: for %s, not an address the email was sent to", fb.source,
                fb.kind, fb.recipient[:320], extra=ids,
            )  # fmt: skip
            self.refuse(fb.source, "wrong_recipient")
            return Outcome(False, "wrong_recipient")
        # A copy's (cc, bcc) report suppresses its address and is kept in the history, but
        # the email's status and the rates (counted per email, by its recipient) follow
        # the recipient's reports only (README "Bounces and complaints").
        primary = address == normalize(doc.recipient)
        key = f"{fb.source}|{fb.source_id}|{fb.kind}|{fb.event_id}|{address}"
        # A report with two names (SES: its feedbackId and the SNS MessageId) is a repeat
        # under either; the alias key is the one used before the report had two.
        alias = f"{fb.source}|{fb.alias}|{fb.kind}|{fb.event_id}|{address}" if fb.alias else ""
        if await self.ledger.seen(key) or (alias and await self.ledger.seen(alias)):
            log.info("%s %s: a repeat, applied before", fb.source, fb.kind, extra=ids)
            self.refuse(fb.source, "repeat")
            return Outcome(False, "repeat")
        suppressed = await self._act(fb, address, doc.category, key)
        if primary and fb.kind in (FeedbackKind.BOUNCE, FeedbackKind.COMPLAINT):
            # Before the status event is published, so the store cannot count it yet: it is
            # counted here as moved, once.
            await self.check_rates(doc.category, moved=(doc.status, STATUS_OF[fb.kind]))
            domain = self.metrics.domain(address)
            self.metrics.by_domain.add(domain, fb.kind.value)
            self.check_domain_rates(domain)
        await self.bus.publish_status(self._status_event(fb, doc))
        await self.ledger.mark_seen(key, datetime.now(UTC))
        if self._live is not None:
            self._live.add((fb.event_id, fb.source, fb.source_id))
        if alias:
            await self.ledger.mark_seen(alias, datetime.now(UTC))
        bounce_type = fb.bounce_type.value if fb.bounce_type is not None else ""
        self.metrics.reports.labels(
            fb.source, fb.kind.value, bounce_type, doc.category, self.metrics.domain(address)
        ).inc()
        self.counts[fb.kind.value] = self.counts.get(fb.kind.value, 0) + 1
        log.info(
            "%s %s%s applied%s", fb.source, fb.kind, f" ({bounce_type})" if bounce_type else "",
            f"; suppressed ({suppressed})" if suppressed else "", extra=ids,
        )  # fmt: skip
        return Outcome(True, "applied", suppressed)

    async def _act(self, fb: Feedback, address: str, category: str, key: str) -> str | None:
        when = fb.occurred_at.isoformat()
        detail = " ".join(x for x in (fb.status_code, fb.diagnostic) if x)
        if fb.kind is FeedbackKind.COMPLAINT:
            scope = category if self.settings.complaint_scope == "category" else ALL_CATEGORIES
            reason = f"complaint ({fb.feedback_type or 'abuse'}) via {fb.source} at {when}"
            await self.suppression.add(
                address, reason, event_id=fb.event_id, source="complaint", category=scope
            )
            self.metrics.suppressions.labels("complaint").inc()
            return f"complaint, {'category ' + scope if scope else 'every category'}"
        if fb.kind is not FeedbackKind.BOUNCE:
            return None
        if fb.bounce_type is BounceType.HARD:
            reason = f"hard bounce via {fb.source} at {when}: {detail}".rstrip(": ")
            await self.suppression.add(address, reason, event_id=fb.event_id, source="bounce")
            self.metrics.suppressions.labels("hard_bounce").inc()
            return "hard bounce"
        # Soft or undetermined: counted; enough of them in the window suppress.
        s = self.settings
        await self.ledger.add_soft_bounce(address, key, fb.occurred_at)
        since = datetime.now(UTC) - timedelta(seconds=s.soft_bounce_window_s)
        n = await self.ledger.soft_bounces(address, since)
        if n < s.soft_bounce_limit:
            return None
        days = s.soft_bounce_window_s / 86400
        reason = f"{n} soft bounces in {days:g} days; last via {fb.source} at {when}: {detail}"
        await self.suppression.add(
            address, reason.rstrip(": "), event_id=fb.event_id, source="bounce"
        )
        self.metrics.suppressions.labels("soft_bounces").inc()
        return f"{n} soft bounces"

    @staticmethod
    def _status_event(fb: Feedback, doc: EmailDocument) -> EmailStatusEvent:
        return EmailStatusEvent(
            event_id=fb.event_id,
            status=STATUS_OF[fb.kind],
            attempt=max(doc.attempts, 1),
            provider=doc.provider,
            # As on every status event (README, wire format): consumers correlate by them.
            tags=list(doc.tags),
            metadata=dict(doc.metadata),
            occurred_at=fb.occurred_at,
            schema_version=STATUS_EVENT_VERSION,
            feedback=FeedbackDetail(
                kind=fb.kind.value,
                recipient=normalize(fb.recipient),
                source=fb.source,
                source_id=fb.source_id,
                bounce_type=fb.bounce_type.value if fb.bounce_type is not None else None,
                status_code=fb.status_code,
                diagnostic=fb.diagnostic[:16384] if fb.diagnostic else None,
                feedback_type=fb.feedback_type,
                reporter=fb.reporter,
            ),
        )

    async def check_rates(
        self, category: str, *, force: bool = False, moved: tuple[Status, Status] | None = None
    ) -> dict[str, float]:
        """The bounce and complaint rates of ``category`` over the window, from the store
        (every process's emails, surviving restarts); warn or pause past a threshold.
        ``moved``: one email the store does not show in its new status yet (from, to)."""
        s = self.settings
        now = trio.current_time()
        last = self._checked.get(category)
        if not force and last is not None and now - last < s.rate_check_s:
            return {}
        self._checked[category] = now
        since = datetime.now(UTC) - timedelta(seconds=s.rate_window_s)
        counts: dict[Status, int] = {}
        for status in _SENT_LIKE:
            page = await self.store.search(
                SearchQuery(status=status, category=category, created_from=since, page_size=1)
            )
            counts[status] = page.total
        if moved is not None and moved[0] in counts and moved[1] in counts:
            old, new = moved
            if counts[old] > 0 and old is not new:
                counts[old] -= 1
                counts[new] += 1
        sent = sum(counts.values())
        rates = {
            "complaint": counts[Status.COMPLAINED] / sent if sent else 0.0,
            "bounce": counts[Status.BOUNCED] / sent if sent else 0.0,
        }
        thresholds = {"complaint": s.complaint_rate_threshold, "bounce": s.bounce_rate_threshold}
        for kind, rate in rates.items():
            self.metrics.rate.labels(kind, category).set(rate)
            if sent < s.rate_min_emails or rate <= thresholds[kind]:
                continue
            why = (
                f"{kind} rate {rate:.2%} over {s.rate_window_s / 3600:g} h "
                f"({sent} emails) is over {thresholds[kind]:.2%}"
            )
            if not s.pause_on_threshold:
                log.warning("category %r: %s (feedback.pause_on_threshold is off)", category, why)
                continue
            if category not in self.paused:
                await self.suppression.add(
                    CATEGORY_PAUSE, f"category paused: {why}", source="feedback-rate",
                    category=category,
                )  # fmt: skip
                self.paused[category] = why
                self.metrics.paused.labels(category).set(1)
            log.warning("category %r paused: %s", category, why)
        return rates

    REBUILD_MAX = 200_000  # emails read from the store at most to fill the domain window
    REBUILD_PAGE = 500

    def begin_domain_rebuild(self) -> bool:
        """Claim the rebuild of this process's domain window and note, from now, the reports
        applied (they are counted live); False when it was done (a restarted sink)."""
        if self.metrics.rebuilt:
            return False
        self.metrics.rebuilt = True
        self._live = set()
        return True

    async def rebuild_domain_rates(self) -> int:
        """Fill the per-domain window (kept in memory) from the store, once per process:
        the emails created in the window before this process counted sends itself, by
        status (sent, delivered, delayed, bounced, complained: sent), and their recipients'
        bounces and complaints from their history, each at its time. Reports this sink
        applies meanwhile are not counted twice; at most ``REBUILD_MAX`` emails, newest
        first. Returns how many emails were read."""
        if self._live is None and not self.begin_domain_rebuild():
            return 0
        m = self.metrics
        now = datetime.now(UTC)
        since = m.counting_since - timedelta(seconds=self.settings.rate_window_s)
        read = 0
        try:
            for status in _SENT_LIKE:
                token = ""
                while read < self.REBUILD_MAX:
                    page = await self.store.search(SearchQuery(
                        status=status, created_from=since, created_to=m.counting_since,
                        page_size=self.REBUILD_PAGE, page_token=token,
                    ))  # fmt: skip
                    for doc in page.documents[: self.REBUILD_MAX - read]:
                        read += 1
                        self._count_stored(doc, now)
                    token = page.next_page_token
                    if not token:
                        break
        finally:
            self._live = None
        self.rebuilt_from = read
        return read

    def _count_stored(self, doc: EmailDocument, now: datetime) -> None:
        window = self.metrics.by_domain
        domain = self.metrics.domain(doc.recipient)
        window.add(domain, "sent", age_s=(now - (doc.sent_at or doc.created_at)).total_seconds())
        own = normalize(doc.recipient)
        for r in doc.history:
            fb = r.feedback
            if fb is None or fb.kind not in ("bounce", "complaint") or fb.recipient != own:
                continue
            if self._live is not None and (doc.event_id, fb.source, fb.source_id) in self._live:
                continue
            window.add(domain, fb.kind, age_s=(now - r.at).total_seconds())

    def check_domain_rates(self, domain: str, *, force: bool = False) -> dict[str, float]:
        """The bounce and complaint rates of one recipient domain (its metric label:
        ``other`` past the first domains) over the window; a warning past a threshold.

        Counted in this process (SENT as integration records it, the reports as applied
        here), not read from the store, which cannot count by domain; at start the window
        is filled from the store once (:meth:`rebuild_domain_rates`);
        ``rate_min_emails`` sends must be counted before anything is said. No pause: a
        domain is not something a sender can stop sending to as a whole."""
        s = self.settings
        now = trio.current_time()
        last = self._checked.get("@" + domain)
        if not force and last is not None and now - last < s.rate_check_s:
            return {}
        self._checked["@" + domain] = now
        counts = self.metrics.by_domain.totals(domain)
        sent = counts.get("sent", 0)
        rates = {
            kind: min(counts.get(kind, 0) / sent, 1.0) if sent else 0.0
            for kind in ("complaint", "bounce")
        }
        thresholds = {"complaint": s.complaint_rate_threshold, "bounce": s.bounce_rate_threshold}
        for kind, rate in rates.items():
            self.metrics.domain_rate.labels(kind, domain).set(rate)
            if sent >= s.rate_min_emails and rate > thresholds[kind]:
                log.warning(
                    "recipient domain %r: %s rate %.2f%% over %g h (%d emails sent) is over "
                    "%.2f%%", domain, kind, rate * 100, s.rate_window_s / 3600, sent,
                    thresholds[kind] * 100,
                )  # fmt: skip
        return rates
