"""What actors and supervisors need of the system they run in.

``_actor`` and ``_supervisor`` type the system they are handed as :class:`SystemContext`;
``_system.ActorSystem`` is the one implementation. So the modules import in a line,
``_context`` <- ``_actor`` <- ``_supervisor`` <- ``_system``, with no circle through the
system (the way trio keeps ``_run_context.py`` apart from ``_run.py``).
"""

from __future__ import annotations

from typing import Any, Protocol

from ._gate import IntakeGate
from ._ref import ActorRef


class SystemContext(Protocol):
    """The part of :class:`runtime.ActorSystem` that the actors and supervisors it runs use."""

    name: str
    intake: IntakeGate

    def lookup(self, path: str, relative_to: str | None = None) -> ActorRef[Any]: ...
