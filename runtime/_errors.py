"""The runtime's exceptions: each names the actor and what was wrong."""

from __future__ import annotations


class ActorError(Exception):
    """Base class of every error the runtime raises about an actor."""


class MessageTypeError(ActorError, TypeError):
    """An actor was sent a message type it does not declare in ``accepts``."""

    def __init__(self, path: str, kind: str, got: type, accepts: tuple[type, ...]) -> None:
        names = ", ".join(t.__name__ for t in accepts) or "nothing"
        super().__init__(
            f"actor {path!r} ({kind}) does not accept {got.__name__}; it accepts {names}"
        )
        self.path = path
        self.got = got


class MailboxFull(ActorError):
    """``send_nowait`` found the mailbox at capacity: backpressure, try ``send``."""

    def __init__(self, path: str, capacity: int) -> None:
        super().__init__(f"mailbox of actor {path!r} is full ({capacity} messages)")
        self.path = path
        self.capacity = capacity


class AskTimeout(ActorError, TimeoutError):
    """``ask`` got no reply in time."""

    def __init__(self, path: str, timeout: float, msg_type: type) -> None:
        super().__init__(
            f"actor {path!r} did not answer {msg_type.__name__} within {timeout:g}s"
        )
        self.path = path
        self.timeout = timeout


class ActorStopped(ActorError):
    """An ``ask`` cannot be answered: the actor is stopped for good, or the
    incarnation that had the request in hand ended without answering it
    (crashed, restarted, cancelled, stopped), as OTP's ``gen_server:call``
    exits when the callee dies."""

    def __init__(self, path: str, msg_type: type, reason: str | None = None) -> None:
        if reason is None:
            text = f"actor {path!r} is stopped; {msg_type.__name__} went to the dead letters"
        else:
            text = f"actor {path!r} {reason} before answering {msg_type.__name__}"
        super().__init__(text)
        self.path = path


class ActorNotFound(ActorError, LookupError):
    """No actor is registered at this path."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no actor at path {path!r}")
        self.path = path


class SupervisorEscalation(ActorError):
    """A supervisor passed its restart intensity and gave up; its parent decides next."""

    def __init__(self, path: str, restarts: int, period: float, child: str) -> None:
        super().__init__(
            f"supervisor {path!r} gave up: more than {restarts} restarts in {period:g}s "
            f"(last failure in {child!r})"
        )
        self.path = path
        self.child = child
