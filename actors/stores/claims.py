"""Claims: who may hand an email to a provider, shared by every worker that may receive it.

Before a sender contacts a provider it claims the email's eventId in a record
every worker shares (one SQLite file in the embedded profile, an Elasticsearch
index in the distributed one). The claim is created atomically (a primary key /
``op_type=create``), so of two copies of one email, wherever they run, exactly
one wins; the other finds the claim and either republishes the recorded outcome
or, while the owner is alive and its lease runs, checks again later. After the
provider answered, the owner writes the outcome into its claim, guarded by the
version it created (``if_seq_no`` / a version column): an owner whose claim was
taken over cannot overwrite the new owner's outcome.

A claim without an outcome whose owner died (its lease expired, or, on this
machine, its process is gone) is taken over. Since a claim is written just
before the provider is contacted, such a claim means the outcome is unknown:
the provider may have accepted the email. The taker asks the provider if it
can answer (Maildir can); otherwise the category's policy decides: ``resend``
(at-least-once) or ``fail`` (at-most-once: FAILED, never a second copy).

A transient failure releases the claim (the email was not accepted): its retry
claims again.
"""

from __future__ import annotations

import enum
import os
import socket
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Protocol

import msgspec

from actors.domain.schema import EmailStatusEvent

__all__ = [
    "MACHINE_ENV",
    "UNKNOWN_OUTCOME_REASON",
    "Claim",
    "ClaimDecision",
    "ClaimState",
    "ClaimStore",
    "OneRoundTrip",
    "Settle",
    "new_owner",
    "owner_dead",
]

UNKNOWN_OUTCOME_REASON = "outcome unknown: sender died while sending"


class ClaimState(enum.StrEnum):
    SENDING = "sending"  # the owner may be talking to the provider
    DONE = "done"  # the outcome is recorded
    RELEASED = "released"  # a transient failure: free for the retry


class ClaimDecision(enum.StrEnum):
    SEND = "send"  # this worker holds the claim: contact the provider
    TAKEOVER = "takeover"  # holds the claim of a dead owner that may have sent it
    OUTCOME = "outcome"  # recorded: publish the outcome again, send nothing
    HELD = "held"  # a live owner holds it: look again later


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    decision: ClaimDecision
    # What the outcome write is guarded by: "seq_no:primary_term" (Elasticsearch) or
    # the row version (SQLite). Empty unless this worker holds the claim.
    token: str = ""
    outcome: EmailStatusEvent | None = None  # on OUTCOME
    owner: str = ""  # the holder (HELD) or the dead previous owner (TAKEOVER)
    lease_left_s: float = 0.0  # on HELD: how long the holder's lease still runs


class Settle(msgspec.Struct, frozen=True):
    """The end of a claim: its outcome (terminal status), or None to release it."""

    claim: Claim
    outcome: EmailStatusEvent | None


class ClaimStore(Protocol):
    """The shared record of claims and outcomes (``actors.stores.claims_sqlite``,
    ``actors.stores.claims_elasticsearch``)."""

    owner: str  # this process's identity, written into its claims

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def claim_many(self, event_ids: Sequence[str], lease_s: float) -> list[Claim]:
        """Claim each eventId for ``lease_s`` seconds; one answer per id, in order.

        Never SEND or TAKEOVER for an id whose claim is live or done elsewhere.
        """
        ...

    async def settle_many(self, settles: Sequence[Settle]) -> list[bool]:
        """Record outcomes (or release claims); False where the claim was lost (taken over)."""
        ...

    async def write(
        self, event_ids: Sequence[str], lease_s: float, settles: Sequence[Settle]
    ) -> tuple[list[Claim], list[bool]]:
        """:meth:`settle_many` and :meth:`claim_many` in one round trip (what the email server
        uses)."""
        ...

    async def outcome(self, event_id: str) -> EmailStatusEvent | None:
        """The recorded outcome of ``event_id``, if any (tests and tools)."""
        ...


class OneRoundTrip:
    """:meth:`claim_many` and :meth:`settle_many` as the two halves of :meth:`write`, written
    once for both stores (each implements only ``write``: one round trip for both)."""

    async def write(
        self, event_ids: Sequence[str], lease_s: float, settles: Sequence[Settle]
    ) -> tuple[list[Claim], list[bool]]:
        raise NotImplementedError

    async def claim_many(self, event_ids: Sequence[str], lease_s: float) -> list[Claim]:
        return (await self.write(event_ids, lease_s, ()))[0]

    async def settle_many(self, settles: Sequence[Settle]) -> list[bool]:
        return (await self.write((), 0.0, settles))[1]


MACHINE_ENV = "MAILACTORS_CLAIM_MACHINE"  # tests: stand for another machine (no pid shortcut)


@cache
def _machine() -> str:
    """This machine: host name and boot id, so that a pid is only compared on the same boot."""
    if named := os.environ.get(MACHINE_ENV):
        return named
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()[:8]
    except OSError:
        boot = "noboot"
    return f"{socket.gethostname()}~{boot}"


def new_owner() -> str:
    """A claim owner: this machine, this process, and a nonce for this incarnation."""
    return f"{_machine()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def owner_dead(owner: str) -> bool:
    """True when ``owner`` ran on this machine and its process is gone.

    A dead owner on this machine is known at once (no need to wait out its lease:
    a restarted embedded process takes up its predecessor's claims immediately).
    For an owner elsewhere this says False: only its lease tells.
    """
    machine, _, rest = owner.partition("/")
    pid_text = rest.partition("/")[0]
    if machine != _machine() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # this process: alive (its senders settle or crash into the lease)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False
