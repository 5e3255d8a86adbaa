"""aiosmtpd servers for tests: one that captures what it is sent, one that fails on purpose,
and one that holds every DATA reply until the test lets it go.

The first two live in ``actors/testing/fakesmtp.py`` (``supervisor.py soak`` runs them too);
see its docstring. Re-exported here for the tests.
"""

from __future__ import annotations

import asyncio
import threading
from email import message_from_bytes, policy
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from actors.testing.fakesmtp import (
    CapturingServer,
    FaultServer,
    ReceivedMessage,
    SmtpTestServer,
    free_port,
)

__all__ = [
    "CapturingServer",
    "FaultServer",
    "HoldingServer",
    "ReceivedMessage",
    "SmtpTestServer",
    "free_port",
    "max_in_any_window",
]


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    """The most of ``times`` that fall in any half-open interval of ``window`` seconds."""
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


class HoldingServer(CapturingServer):
    """Holds each message at DATA, before its reply, until :meth:`release` is called.

    A test uses it to keep sends in flight (a worker killed, a broker connection
    closed while the sender waits for "250"). ``holding()`` says which eventIds are
    waiting now and on which client port. A client that goes away while its
    message is held never gets "250": the message is not accepted, as with a real
    server whose client dropped before the end of the transaction.
    """

    def __init__(self, **smtp_kwargs: Any) -> None:
        super().__init__(**smtp_kwargs)
        self._released = threading.Event()
        self._held: dict[str, int] = {}  # eventId -> client port, while held
        self.abandoned: list[str] = []  # held, then the client went away

    def holding(self) -> dict[str, int]:
        with self._lock:
            return dict(self._held)

    def release(self) -> None:
        """Answer every held message and every later one at once."""
        self._released.set()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        event_id = str(message_from_bytes(raw, policy=policy.default)["X-Mailactors-Event-Id"])
        port = int(session.peer[1]) if isinstance(session.peer, tuple) else 0
        with self._lock:
            self._held[event_id] = port
        try:
            while not self._released.is_set():
                if server.transport is None or server.transport.is_closing():
                    with self._lock:
                        self.abandoned.append(event_id)
                    return "451 4.4.2 connection gone"  # nobody reads it
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:  # aiosmtpd cancels the handler when the client drops
            with self._lock:
                self.abandoned.append(event_id)
            raise
        finally:
            with self._lock:
                self._held.pop(event_id, None)
        return await super().handle_DATA(server, session, envelope)

    def stop(self) -> None:
        self._released.set()  # never leave a handler waiting on a stopped loop
        super().stop()

    def __enter__(self) -> HoldingServer:
        self.start()
        return self

    async def __aenter__(self) -> HoldingServer:
        await super().__aenter__()
        return self
