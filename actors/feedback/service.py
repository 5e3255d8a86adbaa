"""The feedback sink as an actor, its resources, its tree, and the SES route of the HTTP edge.

Where it runs: in the process that owns the store, beside the HTTP endpoint
(embedded: the one process; distributed: integration). It reads the email's
document to check a report is about an email we sent to that recipient before it
acts, so it belongs with the store's reader; it publishes the status event on the
bus like the email server, so integration's updater stays the only writer of
documents (and the one place that orders feedback by event time).

Tree::

    feedback/
      sink     applies Feedback records one at a time (FeedbackActions); its mailbox
               is the backpressure for a flood: a source that cannot hand a record
               over in time answers "try again" (SNS retries), nothing is dropped

Sources hand records over with :class:`SinkRef` (a :class:`FeedbackSink`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import msgspec
import trio
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from actors.domain.edges import Bus, BusError, Store, StoreUnavailable
from actors.email_server.suppression import Suppressions
from actors.feedback.actions import FeedbackActions, Outcome
from actors.feedback.events import Feedback
from actors.feedback.ledger import FeedbackLedger, SqliteLedger
from actors.feedback.ses import SesEventError, feedback_from_ses
from actors.feedback.sns import SnsRefused, SnsVerifier, parse_sns
from actors.telemetry.metrics import FeedbackMetrics
from config import Config
from runtime import Actor, ActorRef, ActorStopped, AskTimeout, ChildSpec, SupervisorSpec

__all__ = [
    "FeedbackActor",
    "FeedbackResources",
    "Refusal",
    "ReportFeedback",
    "SinkRef",
    "feedback_enabled",
    "feedback_tree",
    "open_feedback",
    "ses_routes",
]

log = logging.getLogger("mailactors.feedback")

SINK_PATH = "feedback/sink"
ASK_TIMEOUT_S = 10.0  # a source waiting longer answers "try again" (SNS: a 503, retried)


class ReportFeedback(msgspec.Struct, frozen=True):
    feedback: Feedback


class Refusal(msgspec.Struct, frozen=True):
    """A source refused a report before it became a Feedback record (counted, logged)."""

    source: str
    reason: str


class FeedbackResources(msgspec.Struct):
    """What the sink needs besides the store and the bus, opened by :func:`open_feedback`."""

    suppression: Any  # Suppressions
    ledger: Any  # FeedbackLedger
    metrics: FeedbackMetrics


def feedback_enabled(config: Config) -> bool:
    """Whether this configuration takes feedback from anywhere (then the sink runs)."""
    return config.feedback.ses.enabled or config.bounces.enabled


@contextlib.asynccontextmanager
async def open_feedback(
    config: Config, suppression: Suppressions | None = None, metrics: Any = None
) -> AsyncIterator[FeedbackResources | None]:
    """Open the ledger (and the suppression list, unless the process has it open already:
    the embedded email server's) for the sink; ``metrics``: an ``EmailMetrics`` or None.
    None when no feedback source is enabled (nothing is opened)."""
    from actors.email_server.safeguards import open_suppression

    if not feedback_enabled(config):
        yield None
        return
    ledger: FeedbackLedger
    if config.store.kind == "sqlite":
        ledger = SqliteLedger(config.feedback.ledger_path)
    else:
        from actors.feedback.ledger_elasticsearch import ElasticsearchLedger

        ledger = ElasticsearchLedger(
            config.store.resolved_url(),
            config.feedback.ledger_index,
            request_timeout=config.store.request_timeout_s,
        )
    fm = metrics.feedback if metrics is not None else FeedbackMetrics(CollectorRegistry())
    async with contextlib.AsyncExitStack() as stack:
        await ledger.open()
        stack.push_async_callback(ledger.close)
        if suppression is None:
            suppression = await stack.enter_async_context(open_suppression(config))
        yield FeedbackResources(suppression, ledger, fm)


class FeedbackActor(Actor[ReportFeedback | Refusal]):
    """Applies one record at a time; answers its :class:`~actors.feedback.actions.Outcome`."""

    accepts: ClassVar[tuple[type, ...]] = (ReportFeedback, Refusal)
    mailbox = 256

    def __init__(self, config: Config, store: Store, bus: Bus, res: FeedbackResources) -> None:
        self.actions = FeedbackActions(
            config.feedback, store, bus, res.suppression, res.ledger, res.metrics
        )

    async def started(self) -> None:
        a = self.actions
        self.ctx.report(lambda: {
            "counts": dict(a.counts), "paused": dict(a.paused),
            "domain_rates_from": a.rebuilt_from,
        })  # fmt: skip
        if a.begin_domain_rebuild():
            self.ctx.start_soon(self._rebuild_domain_rates)

    async def _rebuild_domain_rates(self) -> None:
        start = trio.current_time()
        try:
            n = await self.actions.rebuild_domain_rates()
        except StoreUnavailable as exc:
            log.warning("per-domain rates not filled from the store (%s): counted from now", exc)
            return
        log.info("per-domain rates filled from %d stored emails in %.2fs", n,
                 trio.current_time() - start)  # fmt: skip

    async def receive(self, msg: ReportFeedback | Refusal) -> Outcome | None:
        if type(msg) is Refusal:
            self.actions.refuse(msg.source, msg.reason)
            return None
        assert isinstance(msg, ReportFeedback)
        try:
            return await self.actions.apply(msg.feedback)
        except (StoreUnavailable, BusError) as exc:
            # Not applied: the source keeps it (SNS retries, SMTP answers 4xx).
            log.warning(
                "%s %s not applied, will be retried: %s", msg.feedback.source, msg.feedback.kind,
                exc, extra={"event_id": msg.feedback.event_id},
            )  # fmt: skip
            return Outcome(False, "unavailable")


class SinkRef:
    """:class:`~actors.feedback.events.FeedbackSink` over the sink actor's ref."""

    def __init__(self, ref: ActorRef[ReportFeedback | Refusal]) -> None:
        self.ref = ref

    async def apply(self, feedback: Feedback) -> Outcome:
        outcome: Outcome = await self.ref.ask(ReportFeedback(feedback), timeout=ASK_TIMEOUT_S)
        return outcome

    async def report(self, feedback: Feedback) -> Outcome:
        outcome = await self.apply(feedback)
        if outcome.reason == "unavailable":
            raise StoreUnavailable("feedback not applied now; report it again later")
        return outcome

    def refuse(self, source: str, reason: str) -> None:
        with contextlib.suppress(Exception):  # counting never fails a request
            self.ref.send_nowait(Refusal(source, reason))


def feedback_tree(
    config: Config, store: Store, bus: Bus, resources: FeedbackResources
) -> SupervisorSpec:
    return SupervisorSpec(
        "feedback",
        [ChildSpec("sink", FeedbackActor, args=(config, store, bus, resources), shutdown=15.0)],
        intensity=5,
        period=10.0,
    )


def ses_routes(config: Config) -> Any:
    """The route factory of ``POST <feedback.ses.path>``: SES events over SNS."""
    settings = config.feedback.ses

    def make(actor: Actor[Any]) -> Sequence[BaseRoute]:
        sink = SinkRef(actor.ctx.lookup(SINK_PATH))
        verifier = SnsVerifier(settings)

        async def endpoint(request: Request) -> Response:
            return await handle_sns(await request.body(), sink, verifier)

        return [Route(settings.path, endpoint, methods=["POST"])]

    return make


async def handle_sns(body: bytes, sink: SinkRef, verifier: SnsVerifier) -> Response:
    """One SNS POST: 200 once applied (or knowingly ignored), 4xx refused, 5xx try again."""
    try:
        msg = parse_sns(body)
        await verifier.verify(msg)
    except SnsRefused as exc:
        log.warning("SNS message refused: %s", exc)
        sink.refuse("ses", exc.reason)
        return _answer(exc.status, exc.reason, str(exc))
    f = msg.fields
    if msg.type == "SubscriptionConfirmation":
        if not verifier.settings.confirm_subscriptions:
            log.warning("SNS subscription to %s not confirmed (confirm_subscriptions off)",
                        f["TopicArn"][:200])  # fmt: skip
            return _answer(200, "ignored", "subscription not confirmed by configuration")
        try:
            await verifier.confirm(msg)
        except SnsRefused as exc:
            log.warning("SNS subscription not confirmed: %s", exc)
            sink.refuse("ses", exc.reason)
            return _answer(exc.status, exc.reason, str(exc))
        log.info("SNS subscription to %s confirmed", f["TopicArn"][:200])
        return _answer(200, "confirmed", f["TopicArn"])
    if msg.type == "UnsubscribeConfirmation":
        log.warning("SNS: unsubscribed from %s (no more SES events from it)", f["TopicArn"][:200])
        return _answer(200, "unsubscribed", f["TopicArn"])
    try:
        records = feedback_from_ses(msg.message, msg.message_id)
    except SesEventError as exc:
        # Authentic but not something we can apply: acknowledged (a retry cannot fix it).
        log.warning("SNS message %s ignored: %s", msg.message_id[:100], exc)
        sink.refuse("ses", "malformed_event")
        return _answer(200, "ignored", str(exc))
    results: list[str] = []
    try:
        for record in records:
            outcome = await sink.apply(record)
            if outcome.reason == "unavailable":
                return _answer(503, "unavailable", "store or bus unavailable; retry")
            results.append(outcome.reason)
    except (AskTimeout, ActorStopped) as exc:
        log.warning("SNS message %s not applied now: %s", msg.message_id[:100], exc)
        return _answer(503, "busy", "feedback sink busy; retry")
    return JSONResponse({"status": "ok", "records": results})


def _answer(status: int, reason: str, detail: str) -> Response:
    return JSONResponse({"status": reason, "detail": detail[:500]}, status_code=status)
