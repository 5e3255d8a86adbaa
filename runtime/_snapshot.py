"""Frozen, JSON-ready views of the live tree, cheap enough to take ten times a second."""

from __future__ import annotations

import enum

import msgspec


class ActorState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ErrorInfo(msgspec.Struct, frozen=True):
    type: str
    message: str
    at: float  # wall-clock time (epoch seconds), for people and logs


class ActorInfo(msgspec.Struct, frozen=True, array_like=False):
    path: str
    kind: str
    state: ActorState
    mailbox_depth: int
    mailbox_capacity: int
    processed: int
    failures: int
    restarts: int
    last_error: ErrorInfo | None
    uptime: float  # seconds in the current incarnation; 0 when not running
    extra: dict[str, object] | None = None  # what the actor chose to report


class DeadLetterInfo(msgspec.Struct, frozen=True):
    path: str
    message_type: str
    reason: str
    at: float


class TreeSnapshot(msgspec.Struct, frozen=True):
    system: str
    taken_at: float
    actors: tuple[ActorInfo, ...]
    dead_letters: int

    def by_path(self) -> dict[str, ActorInfo]:
        return {a.path: a for a in self.actors}
