"""The live actor trees, gathered from every process's control endpoint, and actions on them.

Each running process (embedded: the one; distributed: integration, auth, email-server-N)
serves a control endpoint on a Unix socket in ``service.run_dir`` (what ``supervisor.py
console`` reads). The web view asks each of them, at once, the way the console does: one
code path for both profiles, for the trees and for the charts' metrics (command
``metrics``). This process's own endpoint is asked in process when its socket is not
there (the control endpoint is served by ``up``, not by a bare ``open_embedded``).

Messages per second are the change of ``processed`` between two readings of one actor;
the readings are kept here, so the browser only asks and draws.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio

from config import Config
from runtime import ActorSystem, ControlClient, ControlEndpoint, ControlError

__all__ = ["Trees", "WebTarget"]

log = logging.getLogger("mailactors.web")
Handler = Callable[[Mapping[str, Any]], Awaitable[object]]  # a control command

CALL_TIMEOUT = 5.0


@dataclass(frozen=True)
class WebTarget:
    """One process's control endpoint: a Unix socket, or this process itself."""

    name: str
    socket: Path | None = None
    local: ControlEndpoint | None = field(default=None, repr=False)

    async def call(self, cmd: str, **args: Any) -> Any:
        with trio.fail_after(CALL_TIMEOUT):
            if self.local is not None:
                answer = await self.local.handle({"cmd": cmd, **args})
                # The same JSON-ready form a socket gives (msgspec structs become dicts).
                answer = msgspec.json.decode(msgspec.json.encode(answer, enc_hook=repr))
                if not answer.get("ok"):
                    raise ControlError(str(answer.get("error")))
                return answer.get("result")
            assert self.socket is not None
            async with await ControlClient.connect_unix(self.socket) as client:
                return await client.call(cmd, **args)


class Trees:
    """What the tree page shows, and the actions it offers, over every running process."""

    def __init__(
        self,
        config: Config,
        system: ActorSystem,
        own_name: str,
        commands: Mapping[str, Handler] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(config.service.run_dir)
        endpoint = ControlEndpoint(system, name=own_name, commands=commands)
        self.own = WebTarget(own_name, local=endpoint)
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def targets(self) -> list[WebTarget]:
        try:
            sockets = sorted(p for p in self.run_dir.glob("*.sock") if p.is_socket())
        except OSError:
            sockets = []
        found = [WebTarget(p.stem, socket=p) for p in sockets]
        if not any(t.name == self.own.name or t.name.startswith(f"{self.own.name}-")
                   for t in found):  # fmt: skip
            found.insert(0, self.own)
        return found

    def target(self, name: str) -> WebTarget:
        for t in self.targets():
            if t.name == name:
                return t
        raise LookupError(f"no running process named {name!r}")

    async def gather(self) -> dict[str, Any]:
        """Every process's snapshot, with msgs/s per actor; errors per process beside them."""
        results: dict[str, Any] = {}
        errors: dict[str, str] = {}

        async def one(target: WebTarget) -> None:
            try:
                results[target.name] = await target.call("snapshot")
            except (FileNotFoundError, ConnectionRefusedError):
                pass  # a stale socket: its process is gone
            except trio.TooSlowError:
                errors[target.name] = f"no answer within {CALL_TIMEOUT:g}s"
            except (ControlError, OSError) as exc:
                errors[target.name] = f"{type(exc).__name__}: {exc}"

        async with trio.open_nursery() as nursery:
            for target in self.targets():
                nursery.start_soon(one, target)
        processes = [self._shape(name, results[name]) for name in sorted(results)]
        return {"processes": processes, "errors": dict(sorted(errors.items()))}

    async def metric_samples(self) -> list[list[Any]]:
        """Every process's chart samples (control command ``metrics``), one list for all.

        A process that cannot answer (gone, busy, older) is left out of this reading.
        """
        found: list[list[Any]] = []

        async def one(target: WebTarget) -> None:
            try:
                found.extend(await target.call("metrics"))
            except (ControlError, OSError, trio.TooSlowError) as exc:
                log.debug("no chart samples from %s: %r", target.name, exc)

        async with trio.open_nursery() as nursery:
            for target in self.targets():
                nursery.start_soon(one, target)
        return found

    def _shape(self, name: str, answer: Mapping[str, Any]) -> dict[str, Any]:
        snapshot = answer.get("snapshot") or {}
        now = trio.current_time()
        actors = []
        # By path, so that each supervisor comes right before its children.
        for actor in sorted(snapshot.get("actors", []), key=_natural):
            key = (name, str(actor.get("path")))
            processed = int(actor.get("processed", 0))
            rate = 0.0
            before = self._last.get(key)
            if before is not None and now > before[0] and processed >= before[1]:
                rate = (processed - before[1]) / (now - before[0])
            self._last[key] = (now, processed)
            error = actor.get("last_error")
            extra = actor.get("extra") or {}
            actors.append(
                {
                    "path": actor.get("path"),
                    "depth": actor.get("path", "").count("/"),
                    "name": str(actor.get("path", "")).rpartition("/")[2],
                    "kind": actor.get("kind"),
                    "state": actor.get("state"),
                    "mailbox": [actor.get("mailbox_depth", 0), actor.get("mailbox_capacity", 0)],
                    "rate": round(rate, 1) if math.isfinite(rate) else 0.0,
                    "processed": processed,
                    "restarts": actor.get("restarts", 0),
                    "last_error": f"{error['type']}: {error['message']}" if error else "",
                    "buckets": extra.get("buckets") if isinstance(extra, dict) else None,
                    "extra": extra,
                }
            )
        info = answer.get("info") or {}
        return {
            "name": name,
            "pid": answer.get("pid"),
            "local": answer.get("pid") == os.getpid(),
            "actors": actors,
            "intake": answer.get("intake") or {},
            "queues": info.get("queues"),
            "queues_error": info.get("queues_error"),
            "dead_letters": snapshot.get("dead_letters", 0),
        }

    async def act(self, process: str, action: str, **args: Any) -> Any:
        """``restart`` (path), ``pause``, ``resume``, ``dead_letters`` (limit) on one process."""
        if action not in {"restart", "pause", "resume", "dead_letters"}:
            raise ValueError(f"unknown action {action!r}")
        return await self.target(process).call(action, **args)


def _natural(actor: Mapping[str, Any]) -> list[Any]:
    """sender-2 before sender-10; a supervisor before its children."""
    parts = re.split(r"(\d+)", str(actor.get("path", "")))
    return [int(p) if p.isdigit() else p for p in parts]
