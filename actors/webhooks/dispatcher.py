"""The WebhookDispatcher actor: one delivery loop per endpoint, each with its own limits.

Per endpoint: its own HTTP connection pool, at most ``concurrency`` requests in
flight, and a circuit breaker (``actors.providers.CircuitBreaker``: opened by
``breaker_failures`` failures in a row, one probe after ``breaker_cool_down_s``). So
an endpoint that hangs holds only its own slots; the others keep going. A failed try
is retried after ``base_delay_s * 2**(tries-1)`` (at most ``max_delay_s``, shortened by
up to ``jitter`` at random) while the delivery is younger than ``max_age_s``; then it
is given up (``webhooks list-failed``, ``webhooks replay``). Nothing about a retry is
kept in memory only: the queue holds it (SQLite row, RabbitMQ retry queue).
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from typing import Any, ClassVar

import httpcore
import trio
from prometheus_client import CollectorRegistry, Counter

from actors.providers.breaker import CircuitBreaker, Ticket
from actors.webhooks.delivery import Target, open_pool, post, tls_context
from actors.webhooks.outbox import Job, WebhookQueue
from config import WebhookEndpointConfig, WebhooksConfig
from runtime import Actor

__all__ = ["WebhookDispatcher", "backoff", "outcome_counter"]

log = logging.getLogger("mailactors.webhooks")


def backoff(settings: WebhooksConfig, tries: int) -> float:
    """Seconds before the next try after ``tries`` failed ones (exponential, jittered)."""
    delay: float = min(settings.max_delay_s, settings.base_delay_s * 2.0 ** min(tries - 1, 60))
    return delay * (1.0 - settings.jitter * random.random())


class _Endpoint:
    """One endpoint's state in the dispatcher (its counters are what the console shows)."""

    def __init__(self, config: WebhookEndpointConfig, settings: WebhooksConfig) -> None:
        self.config = config
        self.secret = config.secret()  # resolved once; never logged (registered as a secret)
        self.target = Target(config.url, self.secret)  # parsed and decoded once, not per try
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cool_down_s)
        self.slots = trio.Semaphore(config.concurrency)
        self.verdict = trio.Event()  # set whenever a try ends (a breaker may admit again)
        self.delivered = 0
        self.retried = 0
        self.failed = 0
        self.in_flight = 0
        self.last_errors: deque[str] = deque(maxlen=5)

    def report(self) -> dict[str, object]:
        b = self.breaker.statistics()
        return {
            "delivered": self.delivered,
            "retried": self.retried,
            "failed": self.failed,
            "in_flight": self.in_flight,
            "breaker": b.state.value,
            "last_errors": list(self.last_errors),
        }


class WebhookDispatcher(Actor[Any]):
    """Takes deliveries from ``queue`` and POSTs them, per endpoint, until stopped."""

    accepts: ClassVar[tuple[type, ...]] = ()

    def __init__(
        self,
        settings: WebhooksConfig,
        queue: WebhookQueue,
        outcomes: Counter | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.outcomes = outcomes  # made once per process (see outcome_counter): outlives restarts

    async def started(self) -> None:
        self.endpoints = {e.name: _Endpoint(e, self.settings) for e in self.settings.endpoints}
        self.tls = tls_context(self.settings.ca_file)  # one for every endpoint, made once
        self.ctx.report(lambda: {name: e.report() for name, e in self.endpoints.items()})
        for endpoint in self.endpoints.values():
            self.ctx.start_soon(self._serve, endpoint)

    def _count(self, endpoint: str, outcome: str) -> None:
        if self.outcomes is not None:
            self.outcomes.labels(endpoint, outcome).inc()

    async def _serve(self, endpoint: _Endpoint) -> None:
        cfg = endpoint.config
        # No timeouts in the pool: trio.fail_after(timeout_s) bounds each whole try; no
        # proxy (httpcore reads none from the environment): the SSRF guard checks the target.
        async with open_pool(cfg.concurrency, self.tls) as pool, trio.open_nursery() as nursery:
            while True:
                await endpoint.slots.acquire()
                ticket = endpoint.breaker.acquire()
                while ticket is None:  # open: wait out the cool-down, or for the probe's verdict
                    endpoint.verdict = trio.Event()
                    with trio.move_on_after(max(endpoint.breaker.retry_in(), 0.01)):
                        await endpoint.verdict.wait()
                    ticket = endpoint.breaker.acquire()
                try:
                    job = await self.queue.take(cfg.name)
                except BaseException:
                    endpoint.breaker.release(ticket)
                    endpoint.slots.release()
                    raise
                nursery.start_soon(self._deliver, pool, endpoint, job, ticket)

    async def _deliver(
        self, pool: httpcore.AsyncConnectionPool, endpoint: _Endpoint, job: Job, ticket: Ticket
    ) -> None:
        endpoint.in_flight += 1
        settled = judged = False
        try:
            answer = await post(
                pool, endpoint.target, job.item,
                timeout_s=endpoint.config.timeout_s, allow_private=self.settings.allow_private,
            )  # fmt: skip
            judged = True
            if answer.ok:
                endpoint.breaker.success(ticket)
            elif answer.permanent:
                endpoint.breaker.release(ticket)
            else:
                endpoint.breaker.failure(ticket)
            await self._settle(endpoint, job, answer.ok, answer.permanent, answer.error)
            settled = True
        finally:
            endpoint.in_flight -= 1
            if not judged:
                endpoint.breaker.release(ticket)
            if not settled:  # cancelled (stopping) or the queue failed: back to the queue
                with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                    await self.queue.release(job)
            endpoint.slots.release()
            endpoint.verdict.set()

    async def _settle(
        self, endpoint: _Endpoint, job: Job, ok: bool, permanent: bool, error: str | None
    ) -> None:
        name, item = endpoint.config.name, job.item
        ids = {"event_id": item.event_id}
        if ok:
            await self.queue.delivered(job)
            endpoint.delivered += 1
            self._count(name, "delivered")
            return
        error = error or "failed"
        endpoint.last_errors.append(f"{item.webhook_id}: {error}")
        tries = item.attempts + 1
        delay = backoff(self.settings, tries)
        age = time.time() - item.created_at
        if permanent or age + delay > self.settings.max_age_s:
            await self.queue.give_up(job, error)
            endpoint.failed += 1
            self._count(name, "failed")
            log.warning(
                "webhook %s to %s given up after %d tries: %s",
                item.webhook_id, name, tries, error, extra=ids,
            )  # fmt: skip
        else:
            await self.queue.retry(job, delay, error)
            endpoint.retried += 1
            self._count(name, "retried")
            log.info(
                "webhook %s to %s failed (try %d), again in %.1fs: %s",
                item.webhook_id, name, tries, delay, error, extra=ids,
            )  # fmt: skip


def outcome_counter(registry: CollectorRegistry, endpoints: list[str]) -> Counter:
    """``mailactors_webhook_deliveries_total{endpoint,outcome}`` in ``registry``."""
    counter = Counter(
        "mailactors_webhook_deliveries",
        "Webhook tries by endpoint and outcome (delivered; retried: failed, tried again later; "
        "failed: given up, see supervisor.py webhooks list-failed)",
        ["endpoint", "outcome"],
        registry=registry,
    )
    for endpoint in endpoints:  # graphed series read 0 instead of missing
        for outcome in ("delivered", "retried", "failed"):
            counter.labels(endpoint, outcome)
    return counter
