"""Failover: a chain of providers that is itself a :class:`~actors.domain.edges.Provider`.

``ChainProvider([ses, relay])`` sends each email through the first provider that
takes it, within the same attempt:

* success -- the result is returned as the provider gave it, so
  ``SendResult.provider`` names the provider that sent the email (and that is
  what the document records);
* TRANSIENT or THROTTLED -- this provider cannot take it now: the next one is tried;
* PERMANENT -- the email itself is refused (bad recipient, rejected message): it
  would fail everywhere, so the result is returned at once and no other provider
  is tried.

When every provider failed or was skipped, the result is a failure of the chain:
THROTTLED if every provider that was tried said so, else TRANSIENT; its reply
lists what each provider said, ``provider`` is the last one tried, and
``retry_after`` is the soonest hint (or the soonest end of a cool-down, when
every breaker was open), so the email-server retries it later.

Each provider has its own :class:`~actors.providers.breaker.CircuitBreaker`: after
``failures`` consecutive TRANSIENT or THROTTLED results it is skipped for
``cool_down`` seconds, then one email probes it (the others skip it meanwhile);
OK and PERMANENT results count as the provider working. :meth:`ChainProvider.statistics`
gives every link's breaker state and counters, for the introspection snapshot.

A failover after a timeout can send an email twice: the first provider may have
accepted it without the answer arriving. That is the price of failing over at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from actors.domain.edges import Failure, OutgoingEmail, Provider, SendResult
from actors.providers.breaker import BreakerState, CircuitBreaker

__all__ = ["ChainProvider", "ChainStatistics", "LinkStatistics", "provider_report"]

MAX_REPLY_CHARS = 1000


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """One provider of a chain: its breaker and what went through it (a snapshot).

    ``opened_at`` is wall-clock epoch seconds; ``retry_in`` the seconds of
    cool-down left while open; ``skipped`` counts emails that went past this
    provider because its breaker refused them.
    """

    name: str
    state: BreakerState
    consecutive_failures: int
    opened_at: float | None
    retry_in: float
    times_opened: int
    sent: int
    failed: int
    skipped: int


@dataclass(frozen=True, slots=True)
class ChainStatistics:
    """All the links of a chain, in order (a snapshot)."""

    name: str
    links: tuple[LinkStatistics, ...]
    failovers: int  # emails sent by another provider than the first one tried
    exhausted: int  # emails no provider took (returned as a failure of the chain)


class _Link:
    __slots__ = ("provider", "breaker", "sent", "failed", "skipped")

    def __init__(self, provider: Provider, breaker: CircuitBreaker) -> None:
        self.provider = provider
        self.breaker = breaker
        self.sent = 0
        self.failed = 0
        self.skipped = 0

    def statistics(self) -> LinkStatistics:
        b = self.breaker.statistics()
        return LinkStatistics(
            name=self.provider.name,
            state=b.state,
            consecutive_failures=b.consecutive_failures,
            opened_at=b.opened_at,
            retry_in=b.retry_in,
            times_opened=b.times_opened,
            sent=self.sent,
            failed=self.failed,
            skipped=self.skipped,
        )


class ChainProvider:
    """Tries ``providers`` in order for each email (see the module docstring).

    ``failures`` and ``cool_down`` configure every provider's breaker. Provider
    names must be unique: they are what is recorded as the sender of an email.
    ``open`` opens the providers in order (closing those already opened if one
    fails); ``close`` closes them in reverse.
    """

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        failures: int = 5,
        cool_down: float = 30.0,
        name: str = "chain",
    ) -> None:
        if not providers:
            raise ValueError("a provider chain needs at least one provider")
        names = [p.name for p in providers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"provider names in a chain must be unique; repeated: {duplicates}")
        self.name = name
        self._links = [_Link(p, CircuitBreaker(failures, cool_down)) for p in providers]
        self._failovers = 0
        self._exhausted = 0

    def __repr__(self) -> str:
        return f"ChainProvider([{', '.join(repr(link.provider) for link in self._links)}])"

    @property
    def providers(self) -> list[Provider]:
        return [link.provider for link in self._links]

    def breaker(self, name: str) -> CircuitBreaker:
        """The breaker of the provider called ``name`` (KeyError if there is none)."""
        for link in self._links:
            if link.provider.name == name:
                return link.breaker
        raise KeyError(name)

    def statistics(self) -> ChainStatistics:
        return ChainStatistics(
            self.name,
            tuple(link.statistics() for link in self._links),
            self._failovers,
            self._exhausted,
        )

    async def open(self) -> None:
        opened: list[Provider] = []
        try:
            for link in self._links:
                await link.provider.open()
                opened.append(link.provider)
        except BaseException:
            for provider in reversed(opened):
                await provider.close()
            raise

    async def close(self) -> None:
        error: BaseException | None = None
        for link in reversed(self._links):
            try:
                await link.provider.close()
            except Exception as exc:  # close the others all the same
                error = error or exc
        if error is not None:
            raise error

    async def send(self, email: OutgoingEmail) -> SendResult:
        tried: list[SendResult] = []
        skipped: list[_Link] = []
        for link in self._links:
            ticket = link.breaker.acquire()
            if ticket is None:
                link.skipped += 1
                skipped.append(link)
                continue
            try:
                result = await link.provider.send(email)
            except BaseException:
                link.breaker.release(ticket)
                raise
            if result.ok or result.failure is Failure.PERMANENT:
                link.breaker.success(ticket)
            else:
                link.breaker.failure(ticket)
            if result.ok:
                link.sent += 1
                if tried or skipped:
                    self._failovers += 1
                return result
            link.failed += 1
            if result.failure is Failure.PERMANENT:
                return result
            tried.append(result)
        self._exhausted += 1
        return self._exhausted_result(tried, skipped)

    def _exhausted_result(self, tried: list[SendResult], skipped: list[_Link]) -> SendResult:
        said = [f"{r.provider}: {r.reply or r.failure}" for r in tried]
        said += [
            f"{link.provider.name}: skipped, circuit {link.breaker.state}"
            + (f" (retry in {link.breaker.retry_in():.1f}s)" if link.breaker.retry_in() else "")
            for link in skipped
        ]
        hints = [r.retry_after for r in tried if r.retry_after is not None]
        if not tried:
            waits = [link.breaker.retry_in() for link in skipped]
            hints = [min(waits)] if waits else []
        throttled = bool(tried) and all(r.failure is Failure.THROTTLED for r in tried)
        last = tried[-1] if tried else None
        return SendResult(
            provider=last.provider if last is not None else self.name,
            ok=False,
            code=last.code if last is not None else None,
            reply=("no provider took the email; " + "; ".join(said))[:MAX_REPLY_CHARS],
            failure=Failure.THROTTLED if throttled else Failure.TRANSIENT,
            retry_after=min(hints) if hints else None,
        )


def provider_report(provider: Any) -> dict[str, object]:
    """``{"provider": ...}``: the provider's ``statistics()`` as plain data, for an actor's
    introspection report (a chain's breaker states, a pool's counters); ``{}`` when the
    provider has no ``statistics()``."""
    statistics = getattr(provider, "statistics", None)
    if statistics is None:
        return {}
    return {"provider": msgspec.to_builtins(statistics())}
