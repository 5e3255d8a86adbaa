"""Exit statuses of supervisor.py, and the one line a start-up failure prints.

A failure an operator can fix (a configuration error, a missing secret, a port in use, a
server that cannot be reached) is told in one line on stderr with its own exit status;
the traceback is for ``--debug``. Anything else is a bug and keeps its traceback.

The statuses (the README's "Exit statuses" lists them):

====  ================================================================================
0     done
1     the command failed (a refused request, an email not SENT, a service that died)
2     usage or configuration error: a bad option, key or value, a secret not set,
      a templates directory that is not there
3     ``send --batch``: some requests unanswered
4     an address to listen on is in use (a port, a control socket)
5     a server it needs cannot be reached (RabbitMQ, Elasticsearch, the gRPC API)
130   interrupted (Ctrl-C)
====  ================================================================================
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from enum import IntEnum

from config import Config, ConfigError
from runtime import ProcessExited

__all__ = ["DEBUG_HINT", "Exit", "explain", "leaves", "port_setting"]


class Exit(IntEnum):
    OK = 0
    FAILED = 1
    CONFIG = 2
    UNANSWERED = 3
    ADDRESS_IN_USE = 4
    UNAVAILABLE = 5
    INTERRUPTED = 130


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """Every exception inside ``exc``: group members, and causes (an ActorStartError's
    cause is what really failed), depth first, each once."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            stack.extend(reversed(e.exceptions))
        if e.__cause__ is not None:
            stack.append(e.__cause__)


# A path the configuration names that cannot be created or written.
_PATH_ERRORS = {
    errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EROFS,
    errno.ENOSPC,
}  # fmt: skip
_ADDRESS = re.compile(r"\('?([^',]+)'?, (\d+)\)")


def port_setting(config: Config | None, port: int) -> str | None:
    """The configuration key that asks for ``port`` (``grpc.auth_port``), if one does."""
    if config is None:
        return None
    keys = {
        "grpc.auth_port": config.grpc.auth_port,
        "grpc.integration_port": config.grpc.integration_port,
        "metrics.port": config.metrics.port,
        "control.port": config.control.port,
        "http.port": config.http.port,
        "bounces.port": config.bounces.port,
    }
    for key, value in keys.items():
        if value == port:
            return key
    for key, value in keys.items():
        # The distributed processes listen on the port plus a small offset (operations.py).
        if value and 0 < port - value < 64:
            return key
    return None


def _in_use(exc: OSError, config: Config | None) -> str:
    match = _ADDRESS.search(str(exc))
    if match is None:
        return f"cannot listen: {exc.strerror or exc}"
    host, port = match.group(1), int(match.group(2))
    key = port_setting(config, port)
    if key is None:
        return f"cannot listen on {host}:{port}: address already in use"
    env = "MAILACTORS__" + key.upper().replace(".", "__")
    return (
        f"cannot listen on {host}:{port} ({key}): address already in use; "
        f"choose another port with {env}=PORT"
    )


DEBUG_HINT = " (--debug for the traceback)"
_EXITED = re.compile(r"^(\S+): process \d+ exited with (-?\d+); last output:\n(.*)", re.S)


def _child_exited(exc: BaseException) -> tuple[Exit, str]:
    """A launched process that ended while starting: its status and its last line (its whole
    output is above, prefixed with its name)."""
    match = _EXITED.match(str(exc))
    if match is None:
        return Exit.FAILED, str(exc).splitlines()[0]
    path, code, tail = match.group(1), int(match.group(2)), match.group(3)
    lines = [line for line in tail.splitlines() if line.strip()]
    last = lines[-1].removesuffix(DEBUG_HINT) if lines else "(no output)"
    status = Exit(code) if code in (2, 4, 5) else Exit.FAILED
    return status, f"{path.rsplit('/', 1)[-1]} did not start (exit {code}): {last}"


def explain(exc: BaseException, config: Config | None = None) -> tuple[Exit, str] | None:
    """(exit status, one line) for a failure an operator can fix; None for a bug."""
    from actors.domain.edges import BusError, BusUnavailable
    from actors.domain.templates import RenderError, TemplateError

    found = list(leaves(exc))
    # A Ctrl-C anywhere in the tree wins: the operator asked to stop.
    if any(isinstance(e, KeyboardInterrupt) for e in found):
        return Exit.INTERRUPTED, "interrupted"
    for e in found:
        if isinstance(e, ConfigError):
            return Exit.CONFIG, f"configuration error: {e}"
        if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
            return Exit.ADDRESS_IN_USE, _in_use(e, config)
        if isinstance(e, OSError) and "path too long" in str(e.strerror):
            return Exit.CONFIG, str(e.strerror)  # a control socket under a deep run_dir
        if isinstance(e, OSError) and e.filename is not None and e.errno in _PATH_ERRORS:
            return Exit.CONFIG, (
                f"cannot use {e.filename}: {e.strerror} "
                "(service.data_dir holds what the services write)"
            )
        if isinstance(e, TemplateError) and not isinstance(e, RenderError):
            root = f" (relative to service.root {config.service.root})" if config else ""
            return Exit.CONFIG, f"templates.dir: {e}{root}"
        if isinstance(e, BusUnavailable):
            return Exit.UNAVAILABLE, str(e)
        if isinstance(e, BusError):
            # Wrong credentials are the configuration's; the rest (no permission, a queue
            # declared elsewhere with other arguments) the broker's answer.
            refused = "refused the credentials" in str(e)
            return (Exit.CONFIG if refused else Exit.UNAVAILABLE), f"RabbitMQ: {e}"
    for e in found:
        if isinstance(e, ProcessExited):
            return _child_exited(e)
    for e in found:
        name = f"{type(e).__module__}.{type(e).__qualname__}"
        if name.startswith("elastic_transport.") and "Connection" in name:
            return Exit.UNAVAILABLE, f"cannot reach Elasticsearch: {e}"
    return None
