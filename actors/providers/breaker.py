"""A circuit breaker: stop calling something that keeps failing, and probe it later.

States, as in Nygard's *Release It!*:

* **closed** -- calls go through; consecutive failures are counted, and any
  success resets the count. At ``failures`` in a row the breaker opens.
* **open** -- calls are refused (the caller goes elsewhere) for ``cool_down``
  seconds after it opened.
* **half-open** -- the cool-down is over: the next call goes through as the one
  *probe*; calls made while the probe is in flight are still refused. The probe's
  success closes the breaker, its failure opens it again for another cool-down.

The breaker never calls anything itself: :meth:`CircuitBreaker.acquire` says whether
a call may go now and returns a ticket, and the caller reports how the call went
with :meth:`~CircuitBreaker.success`, :meth:`~CircuitBreaker.failure` or, when it
ended with no verdict (cancelled), :meth:`~CircuitBreaker.release`. A result of a
call admitted before the breaker opened changes nothing but the failure count: only
the probe decides when to close.

Time is Trio's clock (``trio.current_time``), so cool-downs run on ``MockClock``
in tests; ``opened_at`` is also kept as wall-clock epoch seconds, for people.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

__all__ = ["BreakerState", "BreakerStatistics", "CircuitBreaker", "Ticket"]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class BreakerStatistics:
    """A snapshot of one breaker.

    Attributes:
      state: closed, open or half-open (see the module docstring).
      consecutive_failures: failures since the last success.
      opened_at: wall-clock time (epoch seconds) the breaker last opened; None if never.
      retry_in: seconds left of the cool-down while open (0 when a probe may go now).
      times_opened: how often it has opened (including re-opening after a failed probe).
      probing: a probe is in flight.
    """

    state: BreakerState
    consecutive_failures: int
    opened_at: float | None
    retry_in: float
    times_opened: int
    probing: bool


@dataclass(frozen=True, slots=True)
class Ticket:
    """Permission for one call, from :meth:`CircuitBreaker.acquire`."""

    probe: bool


_CALL = Ticket(probe=False)
_PROBE = Ticket(probe=True)


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; probes again after ``cool_down`` s.

    Not thread-safe; meant for the tasks of one Trio run. ``clock`` is for tests
    that do not run under Trio.
    """

    def __init__(
        self,
        failures: int = 5,
        cool_down: float = 30.0,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if failures < 1:
            raise ValueError(f"failures must be at least 1, got {failures}")
        if cool_down < 0:
            raise ValueError(f"cool_down must not be negative, got {cool_down}")
        self.failures = failures
        self.cool_down = cool_down
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_clock = 0.0
        self._opened_wall: float | None = None
        self._times_opened = 0
        self._probing = False

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self._state.value}, failures={self._consecutive}/{self.failures}, "
            f"cool_down={self.cool_down})"
        )

    @property
    def state(self) -> BreakerState:
        """The state now; an open breaker whose cool-down is over reads half-open."""
        if self._state is BreakerState.OPEN and self.retry_in() == 0:
            return BreakerState.HALF_OPEN
        return self._state

    def retry_in(self) -> float:
        """Seconds until a probe may go (0 unless open and cooling down)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_clock + self.cool_down - self._clock())

    def statistics(self) -> BreakerStatistics:
        return BreakerStatistics(
            state=self.state,
            consecutive_failures=self._consecutive,
            opened_at=self._opened_wall,
            retry_in=self.retry_in(),
            times_opened=self._times_opened,
            probing=self._probing,
        )

    def acquire(self) -> Ticket | None:
        """A ticket for one call now, or None when the call must not go (open, or probing)."""
        if self._state is BreakerState.CLOSED:
            return _CALL
        if self._state is BreakerState.OPEN:
            if self.retry_in() > 0:
                return None
            self._state = BreakerState.HALF_OPEN
        if self._probing:
            return None
        self._probing = True
        return _PROBE

    def success(self, ticket: Ticket) -> None:
        """The call went through: reset the count; a successful probe closes the breaker."""
        if ticket.probe:
            self._probing = False
            self._state = BreakerState.CLOSED
            self._consecutive = 0
        elif self._state is BreakerState.CLOSED:
            self._consecutive = 0

    def failure(self, ticket: Ticket) -> None:
        """The call failed: count it; the threshold or a failed probe opens the breaker."""
        self._consecutive += 1
        if ticket.probe:
            self._probing = False
            self._open()
        elif self._state is BreakerState.CLOSED and self._consecutive >= self.failures:
            self._open()

    def release(self, ticket: Ticket) -> None:
        """The call ended with no verdict (cancelled): a probe slot is freed for the next call."""
        if ticket.probe:
            self._probing = False

    def reset(self) -> None:
        """Close the breaker and forget the failures (an operator's override)."""
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._probing = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_clock = self._clock()
        self._opened_wall = time.time()
        self._times_opened += 1
