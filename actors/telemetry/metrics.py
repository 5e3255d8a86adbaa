"""Prometheus metrics of one service process.

Two kinds, both in one ``CollectorRegistry`` per process (never the global one,
so several systems can live in one test process):

* counters and a histogram updated as work happens, by thin wrappers around
  the edges (:func:`instrument`): emails by service and status, request-to-sent
  latency, provider replies by code class, retries, suppressed;
* gauges and counters read at scrape time from the actor system's snapshot
  (:class:`SystemCollector`): mailbox depths, processed, failures and restarts
  per actor path, dead letters, throttle waits and tokens, intake paused, and
  the broker's queue depths (with the dead-letter queue as its own gauge).

The scrape runs in prometheus-client's HTTP thread; the collector reaches the
Trio thread with ``trio.from_thread`` and waits a bounded time for it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actors.domain.edges import ApplyOutcome, SendResult
from actors.domain.schema import EmailDocument, EmailSendEvent, EmailStatusEvent, Status
from runtime import GateStatistics, TreeSnapshot

log = logging.getLogger("mailactors.metrics")

# No ``*_created`` series: a counter's start time doubles every series and no query needs
# it (the process's own start time is process_start_time_seconds).
disable_created_metrics()  # type: ignore[no-untyped-call]

NOT_APPLIED_REASONS = {ApplyOutcome.NOT_FOUND: "unknown_email", ApplyOutcome.IGNORED: "not_allowed"}

LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0
)  # fmt: skip


def code_class(result: SendResult) -> str:
    """``2xx`` / ``4xx`` / ``5xx`` from the reply code; without one, ``2xx`` for an accepted
    email (Maildir) and ``error`` for a failure with no reply (refused connection, timeout)."""
    if result.code is not None:
        return f"{result.code // 100}xx"
    return "2xx" if result.ok else "error"


COMPONENTS = ("auth", "integration", "email-server")


class EmailMetrics:
    """The counters a service updates as emails pass through it.

    ``components``: the services running in this process (all three in the embedded
    profile, one in each process of the distributed profile). Only their series are
    exported, so that summing a metric over every process counts each email once: the
    provider's latency is the email server's, the not-applied statuses integration's.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, components: Sequence[str] = COMPONENTS
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.components = tuple(components)
        r = self.registry
        unknown = set(components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; known: {COMPONENTS}")

        def owned(component: str) -> CollectorRegistry | None:
            # Counted all the same (the wrappers need them), exported only by their owner.
            return r if component in components else None

        self.emails = Counter(
            "mailactors_emails",
            "Emails by the component that recorded a status for them and that status "
            "(auth: PENDING when published; email-server: the outcome it published; "
            "integration: the status it stored)",
            ["component", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mailactors_request_to_sent_seconds",
            "Time from the request to the provider's acceptance, of SENT emails",
            buckets=LATENCY_BUCKETS,
            registry=owned("email-server"),
        )
        self.provider_replies = Counter(
            "mailactors_provider_replies",
            "Provider replies by provider and code class (2xx, 4xx, 5xx; error = no reply)",
            ["provider", "code_class"],
            registry=owned("email-server"),
        )
        self.provider_seconds = Histogram(
            "mailactors_provider_send_seconds",
            "Time one hand-over to the provider took",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=owned("email-server"),
        )
        self.retries = Counter(
            "mailactors_retries",
            "Emails scheduled for another attempt (RETRYING)",
            registry=owned("email-server"),
        )
        self.suppressed = Counter(
            "mailactors_suppressed", "Emails SUPPRESSED", registry=owned("email-server")
        )
        self.not_applied = Counter(
            "mailactors_status_not_applied",
            "Status events integration did not apply, by reason (unknown_email: no document "
            "for the eventId; not_allowed: a duplicate or out-of-order transition)",
            ["reason"],
            registry=owned("integration"),
        )
        # Create the label sets people graph, so they read 0 instead of missing; each in
        # the process that owns it only.
        if "integration" in components:
            for reason in NOT_APPLIED_REASONS.values():
                self.not_applied.labels(reason)
            for status in (Status.PENDING, Status.SENT, Status.FAILED, Status.SUPPRESSED):
                self.emails.labels("integration", status.value)
        if "email-server" in components:
            for status in (Status.SENT, Status.FAILED, Status.RETRYING, Status.SUPPRESSED):
                self.emails.labels("email-server", status.value)
        if "auth" in components:
            self.emails.labels("auth", Status.PENDING.value)
        self.feedback = FeedbackMetrics(r)

    async def chart_samples(self, request: Mapping[str, Any] | None = None) -> list[list[Any]]:
        """``[name, labels, value]`` of the emails counter and the request-to-sent histogram.

        The control command ``metrics`` (the web view's charts gather it from every process:
        in the distributed profile the latency lives in the email servers). Read directly,
        not through the registry, whose scrape-time collector would wait for this thread.
        """
        await trio.lowlevel.checkpoint()
        # Each from its owner only (as exported), so that a sum over processes counts once.
        owned = [self.emails] + ([self.latency] if "email-server" in self.components else [])
        return [
            [s.name, s.labels, s.value]
            for metric in owned
            for family in metric.collect()
            for s in family.samples
        ]

    def published(self, event: EmailStatusEvent) -> None:
        if event.feedback is not None:
            return  # the feedback sink's, not an email server outcome: FeedbackMetrics counts it
        self.emails.labels("email-server", event.status.value).inc()
        if event.status is Status.SENT and event.latency_ms is not None:
            self.latency.observe(event.latency_ms / 1000.0)
        elif event.status is Status.RETRYING:
            self.retries.inc()
        elif event.status is Status.SUPPRESSED:
            self.suppressed.inc()


class FeedbackMetrics:
    """Bounces, complaints, deliveries and delays (``actors.feedback``), and what they did.

    The rates are gauges the feedback sink computes from the store over
    ``feedback.rate_window_s`` (so they survive restarts and count every process);
    per recipient domain there are counters and rates over a window counted in this
    process (sends as integration records SENT: :meth:`stored`, :meth:`outcome`), domains
    past the first ``MAX_DOMAINS`` seen counted as ``other``, to bound the series.
    """

    MAX_DOMAINS = 200

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.reports = Counter(
            "mailactors_feedback",
            "Feedback applied, by source (ses, dsn, arf...), kind (bounce, complaint, delivery, "
            "delay, reject), bounce type, category and recipient domain",
            ["source", "kind", "bounce_type", "category", "domain"],
            registry=r,
        )
        self.refused = Counter(
            "mailactors_feedback_refused",
            "Feedback refused or ignored, by source and reason (bad_signature, old_message, "
            "unknown_email, wrong_recipient, repeat, malformed, ...)",
            ["source", "reason"],
            registry=r,
        )
        self.suppressions = Counter(
            "mailactors_feedback_suppressions",
            "Addresses suppressed because of feedback, by reason (hard_bounce, complaint, "
            "soft_bounces)",
            ["reason"],
            registry=r,
        )
        self.rate = Gauge(
            "mailactors_feedback_rate",
            "Bounced or complained emails over the emails sent, per category, over the window",
            ["kind", "category"],
            registry=r,
        )
        self.paused = Gauge(
            "mailactors_category_paused",
            "1 when feedback paused the category (its emails end SUPPRESSED until resumed)",
            ["category"],
            registry=r,
        )
        self.domain_rate = Gauge(
            "mailactors_feedback_domain_rate",
            "Bounced or complained emails over the emails sent, per recipient domain, over "
            "the window (counted by this process, filled from the store at start; see the README)",
            ["kind", "domain"],
            registry=r,
        )
        self._domains: set[str] = set()
        # Sends per recipient domain, for the per-domain rates: integration records SENT
        # (MeteredStore), the sink in the same process counts bounces and complaints.
        self.by_domain = DomainWindow()
        self._pending: dict[str, str] = {}  # eventId -> domain label, until its send outcome
        # Emails created before this are not counted live (another process stored them):
        # the sink counts them once from the store at start (rebuild_domain_rates).
        self.counting_since = datetime.now(UTC)
        self.rebuilt = False  # the window was filled from the store (once per process)

    MAX_PENDING = 200_000  # ~30 MB at most; past it the oldest are forgotten (not counted)

    def stored(self, event_id: str, recipient: str) -> None:
        """A new document: remember its domain until integration records its outcome."""
        if len(self._pending) >= self.MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))
        self._pending[event_id] = self.domain(recipient)

    def outcome(self, event_id: str, status: Status) -> None:
        """Integration applied ``status``: a SENT counts one send to the email's domain."""
        if status is Status.SENT:
            domain = self._pending.pop(event_id, None)
            if domain is not None:
                self.by_domain.add(domain, "sent")
        elif status in (Status.FAILED, Status.SUPPRESSED, Status.CANCELLED):
            self._pending.pop(event_id, None)

    def domain(self, address: str) -> str:
        domain = address.rpartition("@")[2].lower() or "?"
        if domain in self._domains:
            return domain
        if len(self._domains) < self.MAX_DOMAINS:
            self._domains.add(domain)
            return domain
        return "other"


class DomainWindow:
    """Counts per (domain, kind) over a sliding window of ``buckets`` slices of time
    (trio's clock), so old counts fall out without a timer task."""

    def __init__(self, window_s: float = 86400.0, buckets: int = 24) -> None:
        self.window_s = window_s
        self.buckets = buckets
        self._counts: dict[str, dict[int, dict[str, int]]] = {}

    def _slice(self) -> int:
        return int(trio.current_time() // (self.window_s / self.buckets))

    def add(self, domain: str, kind: str, n: int = 1, *, age_s: float = 0.0) -> None:
        """Count ``n`` of ``kind`` now, or ``age_s`` seconds ago (nothing past the window)."""
        slices = self._counts.setdefault(domain, {})
        now = self._slice()
        for old in [k for k in slices if k <= now - self.buckets]:
            del slices[old]
        at = int((trio.current_time() - max(age_s, 0.0)) // (self.window_s / self.buckets))
        if at <= now - self.buckets:
            return
        counts = slices.setdefault(at, {})
        counts[kind] = counts.get(kind, 0) + n

    def totals(self, domain: str) -> dict[str, int]:
        oldest = self._slice() - self.buckets
        out: dict[str, int] = {}
        for k, counts in self._counts.get(domain, {}).items():
            if k > oldest:
                for kind, n in counts.items():
                    out[kind] = out.get(kind, 0) + n
        return out


# -- wrappers around the edges -----------------------------------------------------


class _Wrapper:
    """Delegates everything it does not override to the wrapped edge."""

    def __init__(self, inner: Any, metrics: EmailMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"<metered {self._inner!r}>"

    @property
    def wrapped(self) -> Any:
        return self._inner

    @property
    def metrics(self) -> EmailMetrics:
        """What it counts into (the web view's charts read it)."""
        return self._metrics


class MeteredBus(_Wrapper):
    """Counts what auth publishes (PENDING) and what the email server publishes (outcomes)."""

    async def publish_send(self, event: EmailSendEvent) -> None:
        await self._inner.publish_send(event)
        self._metrics.emails.labels("auth", Status.PENDING.value).inc()

    async def publish_status(self, event: EmailStatusEvent) -> None:
        await self._inner.publish_status(event)
        self._metrics.published(event)

    async def publish_status_many(self, events: Sequence[EmailStatusEvent]) -> Any:
        outcomes = await self._inner.publish_status_many(events)
        for event, error in zip(events, outcomes, strict=True):
            if error is None:
                self._metrics.published(event)
        return outcomes


class MeteredStore(_Wrapper):
    """Counts what integration stores: new documents (PENDING) and applied status events."""

    async def save_many(self, docs: Sequence[EmailDocument]) -> Any:
        results = await self._inner.save_many(docs)
        created = sum(1 for r in results if r.created)
        for doc, result in zip(docs, results, strict=True):
            if result.created:
                self._metrics.feedback.stored(doc.event_id, doc.recipient)
        if created:
            self._metrics.emails.labels("integration", Status.PENDING.value).inc(created)
        return results

    async def apply_status_many(self, events: Sequence[EmailStatusEvent]) -> Any:
        results = await self._inner.apply_status_many(events)
        emails = self._metrics.emails
        for event, result in zip(events, results, strict=True):
            if result.outcome is ApplyOutcome.APPLIED:
                emails.labels("integration", event.status.value).inc()
                self._metrics.feedback.outcome(event.event_id, event.status)
            else:
                self._metrics.not_applied.labels(NOT_APPLIED_REASONS[result.outcome]).inc()
        return results


class MeteredProvider(_Wrapper):
    """Counts provider replies by code class and times each hand-over."""

    async def send(self, email: Any) -> SendResult:
        started = trio.current_time()
        result: SendResult = await self._inner.send(email)
        m = self._metrics
        m.provider_replies.labels(result.provider, code_class(result)).inc()
        m.provider_seconds.labels(result.provider).observe(trio.current_time() - started)
        return result


def instrument(metrics: EmailMetrics | None, edge: Any) -> Any:
    """``edge`` wrapped so that it counts into ``metrics`` (unchanged when None).

    The kind of edge is told by its methods: a bus publishes, a store saves, a
    provider sends.
    """
    if metrics is None or edge is None:
        return edge
    if hasattr(edge, "publish_status"):
        return MeteredBus(edge, metrics)
    if hasattr(edge, "apply_status_many"):
        return MeteredStore(edge, metrics)
    if hasattr(edge, "send"):
        return MeteredProvider(edge, metrics)
    raise TypeError(f"do not know how to meter {edge!r}")


# -- read at scrape time -------------------------------------------------------------


class Observation:
    """What one scrape needs from the Trio side, gathered there in one go."""

    __slots__ = ("snapshot", "intake", "queues", "dead_letter_queue")

    def __init__(
        self,
        snapshot: TreeSnapshot,
        intake: GateStatistics,
        queues: Mapping[str, int] | None,
        dead_letter_queue: str | None,
    ) -> None:
        self.snapshot = snapshot
        self.intake = intake
        self.queues = queues
        self.dead_letter_queue = dead_letter_queue


class SystemCollector(Collector):
    """Turns the actor system's snapshot into metrics, at each scrape.

    ``observe`` runs in the Trio thread (through ``trio.from_thread.run`` with
    ``token``); a scrape that cannot get an answer within ``timeout`` seconds
    (the system is stopping, or stuck) reports the edge metrics only.
    """

    def __init__(
        self,
        process: str,
        observe: Callable[[], Awaitable[Observation]],
        token: trio.lowlevel.TrioToken,
        timeout: float = 10.0,
    ) -> None:
        self.process = process
        self._observe = observe
        self._token = token
        self.timeout = timeout

    def _fetch(self) -> Observation | None:
        async def bounded() -> Observation | None:
            with trio.move_on_after(self.timeout):
                return await self._observe()
            return None

        try:
            return trio.from_thread.run(bounded, trio_token=self._token)
        except (trio.RunFinishedError, trio.Cancelled, RuntimeError) as exc:
            log.debug("metrics: no snapshot for this scrape (%r)", exc)
            return None

    def collect(self) -> Iterable[Metric]:
        obs = self._fetch()
        if obs is None:
            return []
        return list(families(self.process, obs))


def families(process: str, obs: Observation) -> Iterable[Metric]:
    """The scrape-time metric families of one observation.

    ``process`` labels them with the process (``embedded``, ``integration``, ``auth``,
    ``email-server-0``, ...): an actor path is the same in every worker. Not ``service``
    nor ``instance``, which Prometheus and its Operator set on every target themselves.
    """
    labels = ["process", "path", "kind"]
    depth = GaugeMetricFamily(
        "mailactors_mailbox_depth", "Messages waiting in an actor's mailbox", labels=labels
    )
    capacity = GaugeMetricFamily(
        "mailactors_mailbox_capacity", "Capacity of an actor's mailbox", labels=labels
    )
    processed = CounterMetricFamily(
        "mailactors_actor_processed",
        "Messages an actor has handled (all incarnations)",
        labels=labels,
    )
    failures = CounterMetricFamily(
        "mailactors_actor_failures", "Failures of an actor", labels=labels
    )
    restarts = CounterMetricFamily(
        "mailactors_actor_restarts", "Restarts of an actor by its supervisor", labels=labels
    )
    running = GaugeMetricFamily(
        "mailactors_actor_running", "1 while the actor is running", labels=labels
    )
    throttle_waits = CounterMetricFamily(
        "mailactors_throttle_waits",
        "Sends the throttler made wait for a token",
        labels=["process", "path"],
    )
    tokens = GaugeMetricFamily(
        "mailactors_throttle_tokens",
        "Tokens in a throttle bucket (negative: debt being waited out)",
        labels=["process", "path", "bucket"],
    )
    inbound = CounterMetricFamily(
        "mailactors_inbound_smtp",
        "What the inbound SMTP endpoint (bounces) did, by outcome: feedback_bounce, "
        "rcpt_forged, refused_malformed, ignored_auto-reply, deferred_error, ...",
        labels=["process", "path", "outcome"],
    )
    for a in obs.snapshot.actors:
        values = [process, a.path, a.kind]
        if a.mailbox_capacity:
            depth.add_metric(values, a.mailbox_depth)
            capacity.add_metric(values, a.mailbox_capacity)
        processed.add_metric(values, a.processed)
        failures.add_metric(values, a.failures)
        restarts.add_metric(values, a.restarts)
        running.add_metric(values, 1.0 if a.state.value == "running" else 0.0)
        extra = a.extra or {}
        outcomes = extra.get("inbound_smtp")
        if isinstance(outcomes, dict):
            for outcome, n in outcomes.items():
                if isinstance(n, int | float):
                    inbound.add_metric([process, a.path, str(outcome)], n)
        buckets = extra.get("buckets")
        if isinstance(buckets, dict):
            waits = extra.get("waits")
            if isinstance(waits, int | float):
                throttle_waits.add_metric([process, a.path], waits)
            for name, bucket in buckets.items():
                if isinstance(bucket, dict) and isinstance(bucket.get("tokens"), int | float):
                    tokens.add_metric([process, a.path, str(name)], bucket["tokens"])
    yield from (depth, capacity, processed, failures, restarts, running, throttle_waits, tokens)
    yield inbound
    dead = CounterMetricFamily(
        "mailactors_dead_letters",
        "Messages no actor could take (runtime dead letters)",
        labels=["process"],
    )
    dead.add_metric([process], obs.snapshot.dead_letters)
    yield dead
    paused = GaugeMetricFamily(
        "mailactors_intake_paused", "1 while an operator has paused intake", labels=["process"]
    )
    paused.add_metric([process], 1.0 if obs.intake.paused else 0.0)
    yield paused
    if obs.queues is not None:
        # The dead-letter queue is one of them (queue="email.dead"; in-process: "dead").
        queues = GaugeMetricFamily(
            "mailactors_queue_depth",
            "Messages ready in a bus queue (exported by one process: integration, or the "
            "embedded one)",
            labels=["queue"],
        )
        for name, n in sorted(obs.queues.items()):
            queues.add_metric([name], n)
        yield queues


__all__ = [
    "COMPONENTS",
    "EmailMetrics",
    "FeedbackMetrics",
    "MeteredBus",
    "MeteredProvider",
    "MeteredStore",
    "Observation",
    "SystemCollector",
    "code_class",
    "families",
    "instrument",
]
