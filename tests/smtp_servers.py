"""aiosmtpd servers for tests: one that captures what it is sent, one that fails on purpose.

They live in ``actors/fakesmtp.py`` (``supervisor.py soak`` runs them too); see
its docstring. Re-exported here for the tests.
"""

from actors.fakesmtp import (
    CapturingServer,
    FaultServer,
    ReceivedMessage,
    SmtpTestServer,
    free_port,
)

__all__ = [
    "CapturingServer",
    "FaultServer",
    "ReceivedMessage",
    "SmtpTestServer",
    "free_port",
]
