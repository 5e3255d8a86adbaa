"""Check at run time that an object implements one of the edges' Protocols.

mypy is not run on the tests, so an assignment such as ``as_bus: Bus = server``
proves nothing there. :func:`assert_implements` checks what the Protocol names:
``isinstance`` against the ``runtime_checkable`` Protocol (every member present),
then each method's parameters and whether it is a coroutine function.
"""

from __future__ import annotations

import inspect
from typing import Any, Generic, Protocol


def protocol_members(proto: type) -> set[str]:
    """Public attributes and methods a Protocol declares, its bases' included."""
    names: set[str] = set()
    for base in proto.__mro__:
        if base in (object, Protocol, Generic):
            continue
        names |= {n for n in vars(base) if not n.startswith("_")}
        names |= {n for n in vars(base).get("__annotations__", {}) if not n.startswith("_")}
    return names


def _parameters(fn: Any) -> list[tuple[str, Any]]:
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return [(p.name, p.kind) for p in params]


def assert_implements(obj: object, proto: type) -> None:
    assert isinstance(obj, proto), f"{type(obj).__name__} lacks a member of {proto.__name__}"
    for name in sorted(protocol_members(proto)):
        wanted = vars(proto).get(name) or next(
            (vars(b)[name] for b in proto.__mro__ if name in vars(b)), None
        )
        if not callable(wanted):
            assert hasattr(obj, name), f"{type(obj).__name__}.{name} is missing"
            continue
        got = getattr(obj, name)
        where = f"{type(obj).__name__}.{name}"
        assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(wanted), (
            f"{where}: async in one, not the other"
        )
        assert _parameters(got) == _parameters(wanted), (
            f"{where}{inspect.signature(got)} != {proto.__name__}.{name}{inspect.signature(wanted)}"
        )
