"""mailactors runtime: supervised Trio actors with typed mailboxes.

Knows nothing about email. The public surface is re-exported here; the
modules behind it are private.
"""

from ._actor import Actor, ActorContext, Failed, Reply
from ._control import (
    ControlClient,
    ControlEndpoint,
    ControlError,
    ControlRefused,
    serve_control_tcp,
    serve_control_unix,
)
from ._edge import (
    AsyncioEdge,
    EdgeCancelledError,
    EdgeStatistics,
    current_edge,
    open_asyncio_edge,
)
from ._errors import (
    ActorError,
    ActorNotFound,
    ActorStopped,
    AskTimeout,
    MailboxFull,
    MessageTypeError,
    SupervisorEscalation,
)
from ._gate import GateStatistics, IntakeGate
from ._guest import run_with_asyncio_host
from ._process import ProcessActor, ProcessExited
from ._ref import ActorRef
from ._snapshot import ActorInfo, ActorState, DeadLetterInfo, ErrorInfo, TreeSnapshot
from ._supervisor import (
    ActorStartError,
    Backoff,
    ChildSpec,
    Restart,
    Strategy,
    SupervisorSpec,
)
from ._system import (
    ActorSystem,
    InjectedCrash,
    open_actor_system,
    run_actor_system,
    serve_until_stopped,
)

__all__ = [
    "Actor",
    "ActorContext",
    "ActorError",
    "ActorInfo",
    "ActorNotFound",
    "ActorRef",
    "ActorStartError",
    "ActorState",
    "ActorStopped",
    "ActorSystem",
    "AskTimeout",
    "AsyncioEdge",
    "Backoff",
    "ChildSpec",
    "ControlClient",
    "ControlEndpoint",
    "ControlError",
    "ControlRefused",
    "DeadLetterInfo",
    "EdgeCancelledError",
    "EdgeStatistics",
    "Failed",
    "ErrorInfo",
    "GateStatistics",
    "InjectedCrash",
    "IntakeGate",
    "MailboxFull",
    "MessageTypeError",
    "ProcessActor",
    "ProcessExited",
    "Reply",
    "Restart",
    "Strategy",
    "SupervisorEscalation",
    "SupervisorSpec",
    "TreeSnapshot",
    "current_edge",
    "open_asyncio_edge",
    "open_actor_system",
    "run_actor_system",
    "run_with_asyncio_host",
    "serve_control_tcp",
    "serve_control_unix",
    "serve_until_stopped",
]
