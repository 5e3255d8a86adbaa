"""The email server: takes EmailSendEvents, sends them, reports what happened.

Tree (rest_for_one, so that everything started after a failed child restarts
with it: the consumer last, so it starts only once there is somewhere to put
work, and stops first, so intake ends before the senders drain)::

    email-server/
      publisher   publishes EmailStatusEvents, then acks the delivery they settle
      throttler   provider token bucket, strict per-domain limits, adaptive slow-down
      retrier     holds transient failures until their backoff is over
      recorder    the shared claims record: claims eventIds just before they are sent,
                  writes their outcomes (or releases them), both in one batch
      senders/    one_for_one pool: sender-0 .. sender-N-1
      consumer    takes deliveries off the bus and hands each to the least busy sender
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import msgspec
import trio

from actors.auth import faults
from actors.domain.addressing import format_sender
from actors.domain.edges import Bus, Delivery, Failure, OutgoingEmail, Provider, SendResult
from actors.domain.event_checks import (
    BadMessage,
    CheckedEvents,
    decode_send_event,
    screen_send_delivery,
)
from actors.domain.mime import message_id_for
from actors.domain.schema import EmailSendEvent, EmailStatusEvent, Status
from actors.domain.templates import RenderedEmail, TemplateError, TemplateRenderer
from actors.email_server.idempotency import ClaimAsk, ClaimMany, ClaimsWriter, SettleMany
from actors.email_server.safeguards import SendGuards
from actors.email_server.suppression import is_recipient_refusal
from actors.email_server.throttle import Acquire, Done, SlowDown, ThrottleGate, Throttler, domain_of
from actors.providers.chain import provider_report
from actors.stores.claims import UNKNOWN_OUTCOME_REASON, Claim, ClaimDecision, ClaimStore, Settle
from config import LimitsConfig
from runtime import Actor, ActorRef, ChildSpec, MailboxFull, Strategy, SupervisorSpec

log = logging.getLogger("mailactors.email_server")


class SendJob(msgspec.Struct, frozen=True):
    event: EmailSendEvent
    delivery: Any  # edges.Delivery, settled by the publisher after the status is out
    # The consumer's render of this very event, done to check it: the sender sends
    # it instead of rendering again. None when the consumer could not render.
    rendered: RenderedEmail | None = None


class PublishStatus(msgspec.Struct, frozen=True):
    event: EmailStatusEvent
    delivery: Any  # settled (acked) once the status event is published; may be None


class RetryLater(msgspec.Struct, frozen=True):
    event: EmailSendEvent  # with the next attempt number
    delay: float


class RetryPolicy(msgspec.Struct, frozen=True):
    max_attempts: int = 5
    base_delay_s: float = 2.0
    max_delay_s: float = 300.0
    max_age_s: float = 86400.0
    jitter: float = 0.2

    def delay(self, attempt: int, hint: float | None) -> float:
        base: float = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(base, hint or 0.0)


class Publisher(Actor[PublishStatus]):
    """Publishes status events; the delivery they settle is acked only afterwards.

    One turn takes what is waiting and publishes it with one ``publish_status_many``
    (one crossing of the bus's edge), then acks the deliveries whose status the bus
    holds with one ``ack_many``. Up to ``in_flight`` such batches wait for their broker
    confirms at once: one at a time, a quorum queue's confirm latency would cap the
    whole server. An email's second status in one turn goes in the next publish, so
    an email never has two status events in one batch.
    """

    accepts: ClassVar[tuple[type, ...]] = (PublishStatus,)
    mailbox: ClassVar[int] = 1024
    batch: ClassVar[int] = 256

    def __init__(self, bus: Bus, in_flight: int = 128) -> None:
        self.bus = bus
        self.in_flight = in_flight
        self.slots = trio.Semaphore(in_flight)

    async def receive_batch(self, msgs: list[PublishStatus]) -> list[None]:
        run: list[PublishStatus] = []
        ids: set[str] = set()
        for msg in msgs:
            if msg.event.event_id in ids:  # its earlier status first, in a batch of its own
                await self._start(run)
                run, ids = [], set()
            run.append(msg)
            ids.add(msg.event.event_id)
        await self._start(run)
        return [None] * len(msgs)

    async def _start(self, run: list[PublishStatus]) -> None:
        await self.slots.acquire()
        self.ctx.start_soon(self._publish, run)

    async def _publish(self, run: list[PublishStatus]) -> None:
        try:
            outcomes = await self.bus.publish_status_many([m.event for m in run])
            held = [m.delivery for m, error in zip(run, outcomes, strict=True) if error is None]
            deliveries = [d for d in held if d is not None]
            if deliveries:
                await self.bus.ack_many(deliveries)
            # A status the bus did not take: its delivery stays unacked (redelivered by the
            # broker after this crash and restart) and the error is the sender tree's to see.
            failed = next((error for error in outcomes if error is not None), None)
            if failed is not None:
                raise failed
        finally:
            self.slots.release()

    async def stopping(self) -> None:
        # Wait for what is in flight: acquiring every slot means all are back.
        for _ in range(self.in_flight):
            await self.slots.acquire()


class Retrier(Actor[RetryLater]):
    """Republishes transiently failed emails after their backoff.

    In the embedded profile this wait lives in memory; a crash during it
    leaves the document RETRYING, which the outbox sweeper picks up.
    """

    accepts: ClassVar[tuple[type, ...]] = (RetryLater,)
    mailbox: ClassVar[int] = 1024

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.waiting = 0

    async def started(self) -> None:
        self.ctx.report(lambda: {"waiting": self.waiting})

    async def receive(self, msg: RetryLater) -> None:
        if self.bus.durable_delay:
            # The broker holds the wait (delay queues): it survives our restarts.
            await self.bus.publish_send_delayed(msg.event, msg.delay)
            return
        self.waiting += 1
        self.ctx.start_soon(self._later, msg)

    async def _later(self, msg: RetryLater) -> None:
        try:
            await self.bus.publish_send_delayed(msg.event, msg.delay)
        finally:
            self.waiting -= 1


class SenderSettings(msgspec.Struct, frozen=True):
    root: str  # the service tree's name, where the siblings are found
    sender: str
    message_id_domain: str
    retry: RetryPolicy = RetryPolicy()
    throttled: bool = False
    report_sending: bool = False  # publish SENDING just before the provider is contacted
    claim_lease_s: float = 60.0  # how long a claim keeps other workers off an email
    claim_recheck_s: float = 1.0  # a copy of an email claimed elsewhere looks again after this
    claims_batch_ms: float = 5.0  # under load, claims and outcomes wait this long to share a write
    unknown_outcome: str = "resend"  # "resend" or "fail": a dead owner's claim without outcome
    unknown_outcome_by_category: dict[str, str] = {}
    # (recipient, category) -> List-Unsubscribe's (url, mailto), or None (issue 19)
    unsubscribe: Callable[[str, str], tuple[str, str] | None] | None = None
    # The envelope sender (return path) of an email, from its eventId: the VERP address
    # bounces come back to (actors.feedback.verp). None: the sender's own address.
    envelope_from: Callable[[str], str] | None = None

    def policy_for(self, category: str) -> str:
        return self.unknown_outcome_by_category.get(category, self.unknown_outcome)


class _Attempt:
    """What one handling of a job learned besides its status (one sender, one job at a time)."""

    __slots__ = ("claim", "repeat", "held", "accepted_at")

    def __init__(self) -> None:
        self.claim: Claim | None = None  # held by this sender: settle it
        self.repeat: EmailStatusEvent | None = None  # recorded before: publish it again
        self.held: Claim | None = None  # a live owner elsewhere has it: look again later
        self.accepted_at: float | None = None  # when the provider accepted it


class Sender(Actor[SendJob]):
    """Renders, waits for the throttler, sends through the provider, reports.

    The job usually carries the consumer's render, done to check the event; the
    sender renders itself only when it does not. A render failure is permanent
    (the same input fails again); provider failures are classified by the provider.
    """

    accepts: ClassVar[tuple[type, ...]] = (SendJob,)
    mailbox: ClassVar[int] = 16
    # One turn takes what is waiting (up to this many): one claims ask, the provider's sends
    # side by side, one outcomes ask for all of them (bench embedded_e2e: the per-email asks
    # and turns were a fifth of the event loop's time). A lone job goes alone, at once.
    batch: ClassVar[int] = 16

    def __init__(
        self,
        provider: Provider,
        renderer: TemplateRenderer,
        settings: SenderSettings,
        claims: bool = False,
        guards: SendGuards | None = None,
    ) -> None:
        self.provider = provider
        self.renderer = renderer
        self.settings = settings
        self.claims = claims  # the claims writer runs beside the senders
        if guards is None:
            guards = SendGuards(gate=ThrottleGate(settings.throttled))
        self.guards = guards
        self.repeats = 0

    async def started(self) -> None:
        root = self.settings.root
        self.publisher: ActorRef[PublishStatus] = self.ctx.lookup(f"{root}/publisher")
        self.throttler: ActorRef[Acquire | Done | SlowDown] = self.ctx.lookup(f"{root}/throttler")
        self.retrier: ActorRef[RetryLater] = self.ctx.lookup(f"{root}/retrier")
        if self.claims:
            self.claimer: ActorRef[ClaimAsk | Settle | ClaimMany | SettleMany] = self.ctx.lookup(
                f"{root}/recorder"
            )
        # The provider's own counters (a chain: each provider's breaker state).
        self.ctx.report(
            lambda: {
                "repeats": self.repeats,
                **provider_report(self.provider),
                **self.guards.report(),
            }
        )

    async def receive_batch(self, msgs: list[SendJob]) -> list[None]:
        """Send what is waiting together; what needs an email's own turn goes alone.

        Alone: a lone job, every job when the provider queues sends (no ``batch_sends``:
        SMTP, SES) or while the throttle gate is active (each waits for its own grant) or
        SENDING is reported, a job whose email is in hand elsewhere in this process or
        twice in this batch, a job without the consumer's render. Each job
        fails alone: a job that crashes is handed back and the others are finished before
        the sender crashes with its error (and is restarted), as one job alone would.
        """
        first_error: Exception | None = None
        # How many emails one sender may claim before the provider has them: a provider
        # that queues sends (an SMTP pool) keeps the default 1, so that no claim's lease
        # runs out while its email waits behind a batch; Maildir writes a batch at once.
        limit: int = getattr(self.provider, "batch_sends", 1)
        if limit <= 1 or self.guards.gate.active or self.settings.report_sending:
            limit = 1
        # Runs of jobs that can go together, in mailbox order (so a repeat published after
        # its email is handled after it): a job that must go alone ends the run before it.
        run: list[SendJob] = []
        in_run: set[str] = set()
        for msg in [*msgs, None]:
            event_id = msg.event.event_id if msg is not None else ""
            alone = (
                msg is None
                or limit == 1
                or msg.rendered is None
                or event_id in self.guards.in_flight
                or event_id in in_run
            )
            if run and (alone or len(run) == limit):
                if len(run) == 1:
                    run_error = await self._alone(run[0])
                else:
                    run_error = await self._send_together(run)
                first_error = first_error or run_error
                run, in_run = [], set()
            if msg is None:
                break
            if alone:
                error = await self._alone(msg)  # always run: an earlier error must not skip it
                first_error = first_error or error
            else:
                run.append(msg)
                in_run.add(event_id)
        if first_error is not None:
            raise first_error
        return [None] * len(msgs)

    async def _alone(self, msg: SendJob) -> Exception | None:
        try:
            await self.receive(msg)
        except Exception as exc:  # raised once the rest of the batch is done
            return exc
        return None

    async def _send_together(self, jobs: list[SendJob]) -> Exception | None:
        """The per-email steps of :meth:`_handle`, each done for the whole batch at once.

        Returns the first error of a job that crashed (its delivery handed back), if any.
        """
        guards = self.guards
        n = len(jobs)
        attempts = [_Attempt() for _ in jobs]
        handed = [[False] for _ in jobs]
        errors: list[Exception | None] = [None] * n
        with contextlib.ExitStack() as holding:
            flights = [holding.enter_context(guards.hold(j.event.event_id)) for j in jobs]
            try:
                statuses = await self._statuses_together(jobs, attempts, errors)
                await self._settle_together(jobs, attempts, statuses, errors)
                for i, job in enumerate(jobs):
                    if errors[i] is None:
                        status = await self._report(job, attempts[i], statuses[i], handed[i])
                        flights[i].retrying = status is Status.RETRYING
            except Exception as exc:  # a bug outside any one job: every job not handed on
                for i in range(n):
                    errors[i] = errors[i] or exc
            for i, job in enumerate(jobs):
                error = errors[i]
                if error is not None and not handed[i][0]:
                    log.error(
                        "a sender failed on this email: %r",
                        error,
                        extra={"event_id": job.event.event_id},
                    )
                    await _give_back(job.delivery, error)
        return next((e for e in errors if e is not None), None)

    async def _statuses_together(
        self, jobs: list[SendJob], attempts: list[_Attempt], errors: list[Exception | None]
    ) -> list[EmailStatusEvent | None]:
        """Suppression, claims (one ask), the provider (side by side), classification."""
        guards = self.guards
        n = len(jobs)
        statuses: list[EmailStatusEvent | None] = [None] * n
        emails: list[OutgoingEmail | None] = [None] * n
        for i, job in enumerate(jobs):
            event = job.event
            if guards.suppression is not None:
                entry = guards.suppression.blocking(event.recipient, event.category)
                if entry is not None:
                    guards.suppressed += 1
                    log.info("suppressed: %s", entry.reason, extra={"event_id": event.event_id})
                    statuses[i] = _status(
                        event, Status.SUPPRESSED, error=f"suppressed: {entry.reason}"
                    )
                    continue
            assert job.rendered is not None  # receive_batch sends jobs without a render alone
            emails[i] = self._outgoing(event, job.rendered)
        results: list[SendResult | EmailStatusEvent | None] = [None] * n
        to_send = [i for i in range(n) if emails[i] is not None]
        if self.claims and to_send:
            # Claimed just before the provider is contacted, as for one email (see _deliver).
            claims: list[Claim] = await self.claimer.ask(
                ClaimMany([jobs[i].event.event_id for i in to_send]), timeout=3600
            )
            sending = []
            for i, claim in zip(to_send, claims, strict=True):
                if claim.decision is ClaimDecision.OUTCOME:
                    attempts[i].repeat = claim.outcome
                    continue
                if claim.decision is ClaimDecision.HELD:
                    attempts[i].held = claim
                    continue
                attempts[i].claim = claim
                if claim.decision is ClaimDecision.TAKEOVER:
                    email = emails[i]
                    assert email is not None
                    decided = await self._unknown_outcome(jobs[i].event, email, claim)
                    if decided is not None:
                        results[i] = decided
                        continue
                sending.append(i)
            to_send = sending

        async def send_one(i: int) -> None:
            email = emails[i]
            assert email is not None
            try:
                async with guards.slot():
                    guards.gate.note_send(trio.current_time())
                    result = await self.provider.send(email)
                results[i] = result
                if result.ok:
                    attempts[i].accepted_at = trio.current_time()
                    faults.after_accept()
            except Exception as exc:  # this email's alone: the others go on
                errors[i] = exc

        send_many = getattr(self.provider, "send_many", None)
        if send_many is not None and to_send:
            # One call for the batch (Maildir: one write); an error is every email's.
            try:
                async with guards.slot():
                    guards.gate.note_send(trio.current_time())
                    sent: list[SendResult] = await send_many([emails[i] for i in to_send])
            except Exception as exc:
                for i in to_send:
                    errors[i] = exc
            else:
                for i, answer in zip(to_send, sent, strict=True):
                    results[i] = answer
                    if answer.ok:
                        attempts[i].accepted_at = trio.current_time()
                        try:
                            faults.after_accept()
                        except Exception as exc:
                            errors[i] = exc
        else:
            async with trio.open_nursery() as nursery:
                for i in to_send:
                    nursery.start_soon(send_one, i)
        for i, result in enumerate(results):
            if result is None or errors[i] is not None:
                continue
            if isinstance(result, EmailStatusEvent):
                statuses[i] = result
                continue
            if result.failure is Failure.THROTTLED:
                with contextlib.suppress(MailboxFull):
                    self.throttler.send_nowait(SlowDown(domain_of(jobs[i].event.recipient)))
            try:
                statuses[i] = await self._classify(jobs[i].event, result)
            except Exception as exc:
                errors[i] = exc
        return statuses

    async def _settle_together(
        self,
        jobs: list[SendJob],
        attempts: list[_Attempt],
        statuses: list[EmailStatusEvent | None],
        errors: list[Exception | None],
    ) -> None:
        """The outcomes (or releases) of the claims this batch holds, in one ask."""
        held = [
            i
            for i, attempt in enumerate(attempts)
            if attempt.claim is not None and errors[i] is None
        ]
        if not held:
            return
        settles = []
        for i in held:
            status, claim = statuses[i], attempts[i].claim
            assert status is not None and claim is not None
            settles.append(Settle(claim, status if status.status.terminal else None))
        kept: list[bool] = await self.claimer.ask(SettleMany(settles), timeout=3600)
        now = trio.current_time()
        for i, ok in zip(held, kept, strict=True):
            accepted_at = attempts[i].accepted_at
            if accepted_at is not None:
                self.guards.window.note(now - accepted_at)
            if not ok:
                self.guards.claims_lost += 1

    async def _report(
        self,
        job: SendJob,
        attempt: _Attempt,
        status: EmailStatusEvent | None,
        handed: list[bool],
    ) -> Status:
        """Publish what became of one job; ``handed[0]`` turns True once its delivery is
        someone else's to settle (the publisher's, or acked here)."""
        event = job.event
        ids = {"event_id": event.event_id}
        if attempt.repeat is not None:
            # Handed to a provider before: say again what happened, send nothing.
            self.repeats += 1
            log.debug("already sent, not sending again", extra=ids)  # counted: repeats
            handed[0] = True
            await self.publisher.send(PublishStatus(attempt.repeat, job.delivery))
            return attempt.repeat.status
        if attempt.held is not None:
            # Another worker, alive, is sending it: look again once it had time to record
            # the outcome (or its lease ran out). The bus holds the wait (durably, on RabbitMQ).
            self.guards.held += 1
            delay = min(max(attempt.held.lease_left_s, 0.2), self.settings.claim_recheck_s)
            log.info("claimed by %s, looking again in %.1fs", attempt.held.owner, delay, extra=ids)
            await self.retrier.ask(RetryLater(event, delay), timeout=120)
            handed[0] = True
            if job.delivery is not None:
                await job.delivery.ack()
            return Status.RETRYING  # a copy waiting in this process is redundant too
        assert status is not None
        handed[0] = True
        await self.publisher.send(PublishStatus(status, job.delivery))
        return status.status

    async def receive(self, msg: SendJob) -> None:
        event_id = msg.event.event_id
        if not await self.guards.wait_turn(event_id):
            # Another sender of this process had this copy's email in hand and left it
            # RETRYING, its retry scheduled: this copy is redundant, settled and dropped.
            log.info("a copy of an email being retried, dropped", extra={"event_id": event_id})
            if msg.delivery is not None:
                await msg.delivery.ack()
            return
        with self.guards.hold(event_id) as flight:
            handed = [False]
            try:
                status = await self._handle(msg, handed)
            except Exception as exc:
                if not handed[0]:
                    await _give_back(msg.delivery, exc)
                raise
            flight.retrying = status is Status.RETRYING

    async def _handle(self, msg: SendJob, handed: list[bool]) -> Status:
        attempt = _Attempt()
        status = await self._send(msg.event, msg.rendered, attempt)
        if attempt.repeat is not None or attempt.held is not None:
            return await self._report(msg, attempt, None, handed)
        if attempt.claim is not None:
            # Durable before the status is published: a later copy finds the outcome (or,
            # after a transient failure, a released claim that its retry takes).
            outcome = status if status.status.terminal else None
            kept = await self.claimer.ask(Settle(attempt.claim, outcome), timeout=3600)
            if attempt.accepted_at is not None:
                self.guards.window.note(trio.current_time() - attempt.accepted_at)
            if not kept:
                self.guards.claims_lost += 1
        return await self._report(msg, attempt, status, handed)

    async def _send(
        self, event: EmailSendEvent, rendered: RenderedEmail | None, attempt: _Attempt
    ) -> EmailStatusEvent:
        if rendered is None:
            try:
                rendered = self.renderer.render(
                    event.template, dict(event.variables), event.subject
                )
            except TemplateError as exc:
                log.warning("failed: render: %s", exc, extra={"event_id": event.event_id})
                return _status(event, Status.FAILED, error=f"render: {exc}")
        guards = self.guards
        if guards.suppression is not None:
            entry = guards.suppression.blocking(event.recipient, event.category)
            if entry is not None:  # refused for good before: the provider is not contacted
                guards.suppressed += 1
                log.info("suppressed: %s", entry.reason, extra={"event_id": event.event_id})
                return _status(event, Status.SUPPRESSED, error=f"suppressed: {entry.reason}")
        domain = domain_of(event.recipient)
        grant: int | None = None
        if guards.gate.active:
            grant = await self.throttler.ask(Acquire(domain), timeout=3600)
        try:
            result = await self._deliver(event, rendered, guards, attempt)
        finally:
            if grant is not None:  # the provider answered: the domain's slot ends its window
                with contextlib.suppress(MailboxFull):
                    self.throttler.send_nowait(Done(domain, grant))
        if isinstance(result, EmailStatusEvent):  # decided without the provider
            return result
        if result.failure is Failure.THROTTLED:
            with contextlib.suppress(MailboxFull):
                self.throttler.send_nowait(SlowDown(domain))
        return await self._classify(event, result)

    async def _deliver(
        self, event: EmailSendEvent, rendered: Any, guards: SendGuards, attempt: _Attempt
    ) -> SendResult | EmailStatusEvent:
        email = self._outgoing(event, rendered)
        if self.claims:
            # Claimed last, just before the provider is contacted: a claim without an
            # outcome then means "maybe sent", and the throttle wait is outside the lease.
            # A long timeout: while the claims store is down, sending waits for it.
            claim: Claim = await self.claimer.ask(ClaimAsk(event.event_id), timeout=3600)
            if claim.decision is ClaimDecision.OUTCOME:
                attempt.repeat = claim.outcome
                return _status(event, Status.PENDING)  # replaced by the repeat
            if claim.decision is ClaimDecision.HELD:
                attempt.held = claim
                return _status(event, Status.PENDING)  # replaced by a later look
            attempt.claim = claim
            if claim.decision is ClaimDecision.TAKEOVER:
                decided = await self._unknown_outcome(event, email, claim)
                if decided is not None:
                    return decided
        if self.settings.report_sending:
            await self.publisher.send(PublishStatus(_status(event, Status.SENDING), None))
        async with guards.slot():
            guards.gate.note_send(trio.current_time())
            result = await self.provider.send(email)
        if result.ok:
            attempt.accepted_at = trio.current_time()
            faults.after_accept()  # the window, created on purpose by tests and the soak
        return result

    def _copies(self, event: EmailSendEvent, addresses: list[str]) -> list[str]:
        """``addresses`` (the email's cc or bcc) without the suppressed ones: a copy's hard
        bounce or complaint stops later copies to it, and the email still goes to the rest
        (the recipient's own entry decides SUPPRESSED)."""
        suppression = self.guards.suppression
        if not addresses or suppression is None:
            return addresses
        kept = []
        for address in addresses:
            entry = suppression.blocking(address, event.category)
            if entry is None:
                kept.append(address)
                continue
            self.guards.suppressed_copies += 1
            log.info(
                "not sent to the suppressed copy %s: %s",
                address,
                entry.reason,
                extra={"event_id": event.event_id},
            )
        return kept

    def _outgoing(self, event: EmailSendEvent, rendered: RenderedEmail) -> OutgoingEmail:
        return OutgoingEmail(
            event_id=event.event_id,
            sender=(
                format_sender(event.from_address, event.from_name)
                if event.from_address
                else self.settings.sender
            ),
            recipient=event.recipient,
            cc=self._copies(event, event.cc),
            bcc=self._copies(event, event.bcc),
            reply_to=event.reply_to,
            headers=event.headers,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            message_id=message_id_for(event.event_id, self.settings.message_id_domain),
            attachments=[(a.filename, a.content_type, a.content) for a in event.attachments],
            list_unsubscribe=(
                self.settings.unsubscribe(event.recipient, event.category)
                if self.settings.unsubscribe is not None
                else None
            ),
            envelope_from=(
                self.settings.envelope_from(event.event_id) if self.settings.envelope_from else None
            ),
        )

    async def _unknown_outcome(
        self, event: EmailSendEvent, email: OutgoingEmail, claim: Claim
    ) -> SendResult | EmailStatusEvent | None:
        """The claim's owner died, maybe after the provider accepted the email.

        A provider that can tell (``was_sent``) is asked; otherwise the category's
        policy decides: "fail" ends it FAILED (never a second copy), "resend" sends.
        None: send it.
        """
        guards = self.guards
        guards.takeovers += 1
        ids = {"event_id": event.event_id}
        was_sent = getattr(self.provider, "was_sent", None)
        if was_sent is not None:
            found: str | None = await was_sent(email)
            if found is not None:
                guards.found_sent += 1
                log.warning(
                    "took over %s's claim: the provider has it, not sending again",
                    claim.owner,
                    extra=ids,
                )
                return SendResult(
                    provider=self.provider.name,
                    ok=True,
                    message_id=found,
                    reply="found at the provider after its sender died",
                )
            log.warning(
                "took over %s's claim: the provider does not have it, sending",
                claim.owner,
                extra=ids,
            )
            return None
        if self.settings.policy_for(event.category) == "fail":
            guards.unknown_failed += 1
            log.warning("took over %s's claim: %s", claim.owner, UNKNOWN_OUTCOME_REASON, extra=ids)
            return _status(event, Status.FAILED, error=UNKNOWN_OUTCOME_REASON)
        guards.unknown_resent += 1
        log.warning(
            "took over %s's claim: outcome unknown, sending again (resend)", claim.owner, extra=ids
        )
        return None

    async def _classify(self, event: EmailSendEvent, result: SendResult) -> EmailStatusEvent:
        common: dict[str, Any] = {
            "provider": result.provider,
            "smtp_code": result.code,
            "smtp_reply": result.reply,
        }
        if result.ok:
            latency = (datetime.now(UTC) - event.requested_at).total_seconds() * 1000
            log.info(
                "sent by %s: %s",
                result.provider,
                f"{result.code or ''} {result.reply or ''}".strip() or "accepted",
                extra={"event_id": event.event_id},
            )
            return _status(
                event,
                Status.SENT,
                provider_message_id=result.message_id,
                latency_ms=latency,
                **common,
            )
        reason = f"{result.failure}: {result.code or ''} {result.reply or ''}".strip()
        policy = self.settings.retry
        age = (datetime.now(UTC) - event.requested_at).total_seconds()
        ids = {"event_id": event.event_id}
        if result.failure is Failure.PERMANENT:
            log.warning("failed (attempt %d): %s", event.attempt, reason, extra=ids)
            if self.guards.suppression is not None and is_recipient_refusal(result):
                # Durable before FAILED is reported: later emails to it end SUPPRESSED.
                await self.guards.suppression.add(event.recipient, reason, event_id=event.event_id)
            return _status(event, Status.FAILED, error=reason, **common)
        if event.attempt >= policy.max_attempts or age >= policy.max_age_s:
            why = "attempts" if event.attempt >= policy.max_attempts else "age"
            log.warning("failed, retries exhausted (%s): %s", why, reason, extra=ids)
            return _status(
                event, Status.FAILED, error=f"retries exhausted ({why}); last: {reason}", **common
            )
        delay = policy.delay(event.attempt, result.retry_after)
        # ask, not send: the retry must be held (durably, on a broker) before the
        # publisher acks the delivery this attempt came from.
        await self.retrier.ask(
            RetryLater(msgspec.structs.replace(event, attempt=event.attempt + 1), delay),
            timeout=120,
        )
        log.info("retrying in %.1fs (attempt %d): %s", delay, event.attempt, reason, extra=ids)
        due = datetime.now(UTC) + timedelta(seconds=delay)
        return _status(event, Status.RETRYING, error=reason, next_attempt_at=due, **common)


async def _give_back(delivery: Delivery | None, exc: BaseException) -> None:
    """A sender crashed on this delivery: hand it back so that it is not stuck unsettled.

    On RabbitMQ it is requeued, which counts towards the queue's delivery limit: a
    message that keeps crashing senders is dead-lettered after ``bus.max_deliveries``.
    The in-process bus keeps no count, so there it is dead-lettered at once, with
    the error as the reason.
    """
    if delivery is None:
        return
    try:
        if getattr(delivery, "deliveries", None) is None:
            await delivery.reject(f"crashed a sender: {exc!r}"[:500])
        else:
            await delivery.requeue()
    except Exception as settle_exc:  # the crash is what matters; the broker redelivers
        log.warning("could not hand back a delivery after a crash: %r", settle_exc)


def _status(event: EmailSendEvent, status: Status, **fields: Any) -> EmailStatusEvent:
    return EmailStatusEvent(
        event_id=event.event_id,
        status=status,
        attempt=event.attempt,
        requested_at=event.requested_at,
        tags=event.tags,
        metadata=event.metadata,
        **fields,
    )


class Consumer(Actor[Any]):
    """Takes send events off the bus and hands each to the least busy sender.

    An event that does not decode is refused with the reason (to the
    dead-letter queue, in the distributed profile) and the loop goes on.
    """

    accepts: ClassVar[tuple[type, ...]] = ()

    def __init__(
        self,
        bus: Bus,
        root: str,
        senders: int,
        renderer: TemplateRenderer | None = None,
        limits: LimitsConfig | None = None,
        checked: CheckedEvents | None = None,
    ) -> None:
        self.bus = bus
        self.root = root
        self.checked = checked  # auth's renders, when auth runs in this process
        self.n = senders
        # The same checks as auth's: a publisher on the broker bypasses auth.
        self.renderer = renderer
        self.limits = limits or LimitsConfig()
        self.refused = 0
        self.taken = 0

    async def started(self) -> None:
        self.senders: list[ActorRef[SendJob]] = [
            self.ctx.lookup(f"{self.root}/senders/sender-{i}") for i in range(self.n)
        ]
        intake = self.ctx.system.intake  # paused by an operator: take nothing new
        checked = self.checked
        self.ctx.report(
            lambda: {
                "taken": self.taken,
                "refused": self.refused,
                "paused": intake.paused,
                # sent on the checks and render of auth in this process (embedded)
                "checked_by_auth": checked.taken if checked is not None else 0,
            }
        )
        self.ctx.start_soon(self._consume)

    async def _consume(self) -> None:
        senders = self.senders
        turn = 0
        intake = self.ctx.system.intake
        # What is already there, in one take (one pass through the gate, one edge crossing
        # on RabbitMQ); a bus without next_send_many hands them one at a time.
        many = getattr(self.bus, "next_send_many", None)
        take = functools.partial(many, 64) if many is not None else self._next_one
        while True:
            for delivery in await intake.take(take):
                turn = await self._dispatch(delivery, senders, turn)

    async def _next_one(self) -> list[Delivery]:
        return [await self.bus.next_send()]

    async def _dispatch(
        self, delivery: Delivery, senders: list[ActorRef[SendJob]], turn: int
    ) -> int:
        """Check one delivery and hand it to the next sender with room; the new turn."""
        rendered: RenderedEmail | None = None  # without a renderer, the sender renders
        if self.renderer is None:
            event = await _decode_only(delivery, self.limits)
        else:
            screened = await screen_send_delivery(
                delivery, self.bus, self.limits, self.renderer, self.checked
            )
            event, rendered = (None, None) if screened is None else screened
        if event is None:  # undecodable or invalid: refused with the reason, settled
            self.refused += 1
            return turn
        self.taken += 1
        job = SendJob(event, delivery, rendered)
        # Round robin, skipping full mailboxes; wait on one only if all are full.
        for _ in range(self.n):
            turn = (turn + 1) % self.n
            try:
                senders[turn].send_nowait(job)
                break
            except MailboxFull:
                continue
        else:
            await senders[turn].send(job)
        return turn


async def _decode_only(delivery: Delivery, limits: LimitsConfig) -> EmailSendEvent | None:
    """Without a renderer the request fields cannot be checked; the envelope still is."""
    try:
        return decode_send_event(delivery.body, limits)
    except BadMessage as exc:
        log.warning("refused a send event: %s", exc)
        await delivery.reject(str(exc))
        return None


def email_server_tree(
    bus: Bus,
    provider: Provider,
    renderer: TemplateRenderer,
    settings: SenderSettings,
    *,
    concurrency: int = 16,
    claims: ClaimStore | None = None,
    rate: float = 0.0,
    burst: int = 20,
    per_domain: dict[str, float] | None = None,
    name: str = "email-server",
    limits: LimitsConfig | None = None,
    guards: SendGuards | None = None,
    adaptive: bool = True,
    min_rate: float = 1.0,
    recover_per_s: float = 1.0,
    checked: CheckedEvents | None = None,
) -> SupervisorSpec:
    throttled = rate > 0 or bool(per_domain)
    settings = msgspec.structs.replace(settings, throttled=throttled, root=name)
    # Shared by the senders and the throttler: the gate, connection slots, suppression.
    guards = guards if guards is not None else SendGuards()
    guards.gate.static = throttled
    throttle_options = {
        "adaptive": adaptive,
        "min_rate": min_rate,
        "recover_per_s": recover_per_s,
        "gate": guards.gate,
    }
    return SupervisorSpec(
        name,
        [
            ChildSpec("publisher", Publisher, args=(bus,), shutdown=10.0),
            ChildSpec(
                "throttler",
                Throttler,
                args=(rate, burst, per_domain or {}),
                kwargs=throttle_options,
            ),
            ChildSpec("retrier", Retrier, args=(bus,)),
            *(
                [
                    ChildSpec(
                        "recorder",  # the name the idempotency recorder had: dashboards keep it
                        ClaimsWriter,
                        args=(claims, settings.claim_lease_s, settings.claims_batch_ms),
                        shutdown=10.0,
                    )
                ]
                if claims is not None
                else []
            ),
            SupervisorSpec(
                "senders",
                [
                    ChildSpec(
                        f"sender-{i}",
                        Sender,
                        args=(provider, renderer, settings, claims is not None, guards),
                        shutdown=30.0,
                    )
                    for i in range(concurrency)
                ],
                intensity=max(10, concurrency),
                period=10.0,
            ),
            ChildSpec(
                "consumer", Consumer, args=(bus, name, concurrency, renderer, limits, checked)
            ),
        ],
        strategy=Strategy.REST_FOR_ONE,
        intensity=5,
        period=10.0,
    )
