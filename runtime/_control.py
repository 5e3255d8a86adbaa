"""The control endpoint: a process's actor system, seen and steered from outside.

One request per line, one answer per line, both JSON objects (msgspec)::

    -> {"cmd": "snapshot"}
    <- {"ok": true, "result": {"name": ..., "pid": ..., "snapshot": {...}, "intake": {...}}}
    -> {"cmd": "restart", "path": "svc/worker"}
    <- {"ok": false, "error": "no actor at 'svc/worker'"}

Commands: ``ping``, ``snapshot``, ``restart`` (inject a crash at ``path``; its
supervisor restarts it), ``pause`` and ``resume`` (the system's intake gate),
``dead_letters`` (``limit``; ``external``: false leaves out the dead letters kept
outside the runtime), ``commands``; a service can add its own.

Who may talk to it is decided by the transport, before any command is read.
The Unix socket is created mode 0600 (with the umask narrowed while binding,
so it is never reachable by others, not even briefly) and a peer whose uid is
neither ours nor root's is refused (``SO_PEERCRED``). Over TCP every request
carries ``"token"``; a wrong or missing one is answered ``refused`` and the
connection closed. The token is compared in constant time and never logged.
"""

from __future__ import annotations

import errno
import hmac
import logging
import math
import os
import socket as stdlib_socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
import trio

from ._errors import ActorNotFound
from ._snapshot import ActorState
from ._system import ActorSystem, InjectedCrash

log = logging.getLogger("runtime.control")

__all__ = [
    "ControlClient",
    "ControlEndpoint",
    "ControlError",
    "ControlRefused",
    "serve_control_tcp",
    "serve_control_unix",
]

MAX_LINE = 1 << 20  # a request longer than this is an error; the connection is closed
IDLE_TIMEOUT = 300.0  # an idle connection is closed after this many seconds
MAX_CONNECTIONS = 32

Handler = Callable[[Mapping[str, Any]], Awaitable[object]]


class ControlError(Exception):
    """A command failed; the message is the endpoint's answer."""


class ControlRefused(ControlError):
    """The endpoint refused the connection (bad token, wrong user)."""


def _enc_hook(obj: object) -> object:
    return repr(obj)


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.json.Decoder()


class ControlEndpoint:
    """What the control endpoint of one actor system answers, whatever the transport.

    ``info`` adds service-specific data to every snapshot answer (e.g. queue
    depths on a broker); ``dead_letters`` adds dead letters kept outside the
    runtime (a broker's dead-letter queue); ``commands`` adds or replaces
    commands. All of them run in the system's Trio thread.
    """

    def __init__(
        self,
        system: ActorSystem,
        *,
        name: str | None = None,
        info: Callable[[], Awaitable[Mapping[str, object]]] | None = None,
        dead_letters: Callable[[int], Awaitable[object]] | None = None,
        commands: Mapping[str, Handler] | None = None,
    ) -> None:
        self.system = system
        self.name = name or system.name
        self._info = info
        self._dead_letters = dead_letters
        self.commands: dict[str, Handler] = {
            "ping": self._ping,
            "snapshot": self._snapshot,
            "restart": self._restart,
            "pause": self._pause,
            "resume": self._resume,
            "dead_letters": self._dead_letters_cmd,
            "commands": self._commands,
        }
        self.commands.update(commands or {})

    async def handle(self, request: Mapping[str, Any]) -> dict[str, object]:
        """One request as a dict -> one answer as a dict. Never raises for a bad request."""
        cmd = request.get("cmd")
        handler = self.commands.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return {
                "ok": False,
                "error": f"unknown command {cmd!r}; one of {sorted(self.commands)}",
            }
        try:
            return {"ok": True, "result": await handler(request)}
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except ActorNotFound as exc:
            return {"ok": False, "error": f"no actor at {exc.path!r}"}
        except Exception as exc:  # a failed command must never take the endpoint down
            if not isinstance(exc, RuntimeError | ValueError | KeyError | TypeError):
                log.exception("%s: control command %r failed", self.name, cmd)
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    # -- the built-in commands ------------------------------------------------

    def _whoami(self) -> dict[str, object]:
        return {"name": self.name, "system": self.system.name, "pid": os.getpid()}

    async def _ping(self, request: Mapping[str, Any]) -> object:
        await trio.lowlevel.checkpoint()
        return self._whoami()

    async def _snapshot(self, request: Mapping[str, Any]) -> object:
        out = self._whoami()
        out["snapshot"] = self.system.snapshot()
        out["intake"] = self.system.intake.statistics()
        if self._info is not None:
            out["info"] = dict(await self._info())
        else:
            await trio.lowlevel.checkpoint()
        return out

    async def _restart(self, request: Mapping[str, Any]) -> object:
        path = request.get("path")
        if not isinstance(path, str) or not path:
            raise ControlError("restart: give the actor's path, e.g. {'path': 'svc/worker'}")
        wait = request.get("wait", 10.0)
        if not isinstance(wait, int | float) or wait < 0:
            raise ControlError("restart: wait must be a number of seconds >= 0")
        cell = self.system.lookup(path)._cell
        before = cell.restarts
        await self.system.inject_crash(path, InjectedCrash(f"restarted by an operator: {path}"))
        log.warning("%s: %s crashed on purpose by an operator", self.name, path)
        # Answer once it runs again (or after ``wait`` seconds: backoff, or its
        # supervisor gave up), so that the caller sees the outcome.
        with trio.move_on_after(wait):
            while not (cell.restarts > before and cell.state is ActorState.RUNNING):
                await cell.wait_changed()
        return {
            "path": path,
            "restarted": cell.restarts > before and cell.state is ActorState.RUNNING,
            "restarts": cell.restarts,
            "state": cell.state.value,
        }

    async def _pause(self, request: Mapping[str, Any]) -> object:
        return await self._switch_intake(self.system.intake.pause, "paused")

    async def _resume(self, request: Mapping[str, Any]) -> object:
        return await self._switch_intake(self.system.intake.resume, "resumed")

    async def _switch_intake(self, switch: Callable[[], bool], done: str) -> object:
        await trio.lowlevel.checkpoint()
        changed = switch()
        if changed:
            log.warning("%s: intake %s by an operator", self.name, done)
        return {"changed": changed, "intake": self.system.intake.statistics()}

    async def _dead_letters_cmd(self, request: Mapping[str, Any]) -> object:
        limit = request.get("limit", 100)
        if not isinstance(limit, int) or limit < 0:
            raise ControlError("dead_letters: limit must be an integer >= 0")
        external = request.get("external", True)
        if not isinstance(external, bool):
            raise ControlError("dead_letters: external must be true or false")
        letters = self.system.dead_letters
        recent = list(letters.recent)[-limit:] if limit else []
        out: dict[str, object] = {"count": letters.count, "recent": recent}
        # external=false: a tool reads a shared store (the broker's DLQ) through
        # one service only, not through every service at once.
        if self._dead_letters is not None and external:
            out["external"] = await self._dead_letters(limit)
        else:
            await trio.lowlevel.checkpoint()
        return out

    async def _commands(self, request: Mapping[str, Any]) -> object:
        await trio.lowlevel.checkpoint()
        return sorted(self.commands)

    # -- serving a stream -----------------------------------------------------

    async def serve_stream(self, stream: trio.abc.Stream, token: str | None = None) -> None:
        """Answer requests on ``stream`` until it closes. With ``token``, check every request.

        A request with a wrong or missing token is answered ``refused`` and the
        connection is closed; so is one idle for ``IDLE_TIMEOUT`` seconds.
        """
        lines = _LineReader(stream)
        try:
            while True:
                with trio.move_on_after(IDLE_TIMEOUT) as idle:
                    line = await lines.next_line()
                if idle.cancelled_caught or line is None:
                    return
                answer, close = await self._answer(line, token)
                await stream.send_all(_encoder.encode(answer) + b"\n")
                if close:
                    return
        except _LineTooLong:
            with trio.move_on_after(1):
                await stream.send_all(
                    _encoder.encode({"ok": False, "error": "request too long"}) + b"\n"
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await stream.aclose()

    async def _answer(self, line: bytes, token: str | None) -> tuple[dict[str, object], bool]:
        try:
            request = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            request, error = None, f"not JSON: {exc}"
        else:
            error = "a request is a JSON object"
        if token is not None and not _token_ok(request, token):
            log.warning("%s: refused a control request (bad or missing token)", self.name)
            return {"ok": False, "error": "refused: bad or missing token"}, True
        if not isinstance(request, dict):
            await trio.lowlevel.checkpoint()
            return {"ok": False, "error": error}, False
        return await self.handle(request), False


def _token_ok(request: object, token: str) -> bool:
    given = request.get("token") if isinstance(request, dict) else None
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode(), token.encode())


class _LineTooLong(Exception):
    pass


class _LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def next_line(self) -> bytes | None:
        """The next line without its newline; None at the end of the stream."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) > MAX_LINE:
                raise _LineTooLong
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None if not self.buffer.strip() else self._rest()
            self.buffer += chunk

    def _rest(self) -> bytes:
        line = bytes(self.buffer)
        self.buffer.clear()
        return line


# -- transports -----------------------------------------------------------------


def _peer_uid(sock: trio.socket.SocketType) -> int | None:
    so_peercred = getattr(stdlib_socket, "SO_PEERCRED", None)
    if so_peercred is None:
        return None  # not Linux: the socket's mode is the only check
    raw = sock.getsockopt(stdlib_socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


async def _socket_alive(path: str) -> bool:
    probe = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        with trio.move_on_after(2):
            await probe.connect(path)
            return True
        return True  # the connect hangs: someone is there, too busy to accept
    except OSError:
        return False
    finally:
        probe.close()


async def serve_control_unix(
    endpoint: ControlEndpoint,
    path: str | os.PathLike[str],
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``endpoint`` on a Unix socket at ``path`` (mode 0600) until cancelled.

    A stale socket left by a dead process is replaced; a live one is not
    (``OSError(EADDRINUSE)``). The socket file is removed on the way out
    unless another process has replaced it since.
    """
    path = os.fspath(path)
    if await trio.Path(path).is_socket():
        if await _socket_alive(path):
            raise OSError(errno.EADDRINUSE, f"a control endpoint already listens at {path}")
        os.unlink(path)
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(path)
    except OSError as exc:
        sock.close()
        if len(os.fsencode(path)) > 107:
            raise OSError(
                exc.errno, f"control socket path too long ({len(path)} bytes > 107): {path}; "
                "choose a shorter service.run_dir"
            ) from exc
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    inode = os.stat(path).st_ino
    sock.listen(MAX_CONNECTIONS)
    me = os.getuid()
    limit = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def handler(stream: trio.SocketStream) -> None:
        async with limit:
            uid = _peer_uid(stream.socket)
            if uid is not None and uid not in (0, me):
                log.warning("%s: refused a control connection from uid %d", endpoint.name, uid)
                with trio.move_on_after(1):
                    await stream.send_all(
                        _encoder.encode({"ok": False, "error": "refused: wrong user"}) + b"\n"
                    )
                await stream.aclose()
                return
            await endpoint.serve_stream(stream)

    try:
        listener = trio.SocketListener(sock)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handler, [listener])
            log.info("%s: control endpoint at %s", endpoint.name, path)
            task_status.started(path)
            await trio.sleep_forever()
    finally:
        sock.close()
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except OSError:
            pass


async def serve_control_tcp(
    endpoint: ControlEndpoint,
    host: str,
    port: int,
    token: str,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``endpoint`` on TCP; every request must carry ``token``. Reports the bound port."""
    if not token:
        raise ValueError("a TCP control endpoint needs a token")
    listeners = await trio.open_tcp_listeners(port, host=host)
    limit = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def handler(stream: trio.SocketStream) -> None:
        async with limit:
            await endpoint.serve_stream(stream, token=token)

    bound = int(listeners[0].socket.getsockname()[1])
    log.info("%s: control endpoint at %s:%d (token required)", endpoint.name, host, bound)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        task_status.started(bound)
        await trio.sleep_forever()


# -- client ---------------------------------------------------------------------


class ControlClient:
    """Talks to a control endpoint: ``await client.call("snapshot")``.

    Open it with :meth:`connect_unix` or :meth:`connect_tcp`; close it with
    :meth:`aclose` (or ``async with``).
    """

    def __init__(self, stream: trio.abc.Stream, token: str | None = None) -> None:
        self.stream = stream
        self.token = token
        self._lines = _LineReader(stream)

    @classmethod
    async def connect_unix(cls, path: str | os.PathLike[str]) -> ControlClient:
        return cls(await trio.open_unix_socket(os.fspath(path)))

    @classmethod
    async def connect_tcp(cls, host: str, port: int, token: str) -> ControlClient:
        return cls(await trio.open_tcp_stream(host, port), token=token)

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def request(self, cmd: str, **args: object) -> dict[str, Any]:
        """Send one command; return the raw answer (``ok`` and ``result`` or ``error``)."""
        request: dict[str, object] = {"cmd": cmd, **args}
        if self.token is not None:
            request["token"] = self.token
        await self.stream.send_all(_encoder.encode(request) + b"\n")
        line = await self._lines.next_line()
        if line is None:
            raise ControlRefused("the control endpoint closed the connection")
        answer = _decoder.decode(line)
        if not isinstance(answer, dict):
            raise ControlError(f"unexpected answer {answer!r}")
        return answer

    async def call(self, cmd: str, timeout: float = math.inf, **args: object) -> Any:
        """Send one command and return its result; raise :class:`ControlError` if it failed."""
        with trio.fail_after(timeout):
            answer = await self.request(cmd, **args)
        if not answer.get("ok"):
            error = str(answer.get("error"))
            if error.startswith("refused"):
                raise ControlRefused(error)
            raise ControlError(error)
        return answer.get("result")
