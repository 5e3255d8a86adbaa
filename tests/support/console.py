"""Control-endpoint answers shaped like a running service's, for the console's rendering."""

from __future__ import annotations

import time
from typing import Any


def actor(path: str, kind: str = "Worker", **fields: Any) -> dict[str, Any]:
    """One actor of a snapshot (running, empty mailbox) with ``fields`` changed."""
    return {
        "path": path, "kind": kind, "state": "running", "mailbox_depth": 0,
        "mailbox_capacity": 0 if kind == "supervisor" else 64, "processed": 0,
        "failures": 0, "restarts": 0, "last_error": None, "uptime": 1.0, "extra": None,
        **fields,
    }  # fmt: skip


def email_server_answer(
    name: str = "email-server-0", senders: int = 32, taken_at: float | None = None, **sender: Any
) -> dict[str, Any]:
    """What ``snapshot`` answers for an email server with ``senders`` senders; ``sender``
    changes sender-3."""
    actors = [
        actor("email-server", "supervisor"),
        actor("email-server/publisher", "Publisher"),
        actor("email-server/throttler", "Throttler", extra={"buckets": {}, "waits": 0}),
        actor("email-server/retrier", "Retrier"),
        actor("email-server/recorder", "Recorder"),
        actor("email-server/senders", "supervisor"),
        *(
            actor(f"email-server/senders/sender-{i}", "Sender", **(sender if i == 3 else {}))
            for i in range(senders)
        ),
        actor("email-server/consumer", "Consumer"),
    ]
    return {
        "name": name,
        "pid": 4242,
        "snapshot": {
            "system": "email-server", "dead_letters": 0, "actors": actors,
            "taken_at": time.time() if taken_at is None else taken_at,
        },  # fmt: skip
        "intake": {"paused": False},
        "info": {
            "queues": {f"email.send.delay.{t}": 0 for t in ("1s", "5s", "30s", "120s", "600s")}
            | {"email.send": 120, "email.status": 3, "email.dead": 2},
            "dead_letter_queue": "email.dead",
        },
    }
