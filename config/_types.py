"""The constrained field types and the base every config section uses (one copy: ``_model``
and ``_webhooks`` import them from here, which neither could do from the other without a
cycle)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ._secrets import redact_url

# Marks a string field as a filesystem path: the loader resolves a relative
# value against the project root (never the current directory).
PATH_MARK = "mailactors_path"

PosInt = Annotated[int, Meta(ge=1)]
NonNegInt = Annotated[int, Meta(ge=0)]
Port = Annotated[int, Meta(ge=0, le=65535)]
PosFloat = Annotated[float, Meta(gt=0)]
NonNegFloat = Annotated[float, Meta(ge=0)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
PathStr = Annotated[str, Meta(extra={PATH_MARK: True})]
# A path the services write: a relative value is resolved against service.data_dir, so
# that moving data_dir moves everything they write.
DataPathStr = Annotated[str, Meta(extra={PATH_MARK: "data"})]
EnvName = Annotated[str, Meta(pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")]
NonEmptyStr = Annotated[str, Meta(min_length=1)]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_SECRET_NAMES = ("password", "token", "secret", "api_key")


def redact_value(name: str, value: Any) -> Any:
    """Hide what could be a secret in a field called ``name`` (for display only)."""
    if isinstance(value, str):
        if name == "url" or name.endswith("_url"):
            return redact_url(value)
        if name in _SECRET_NAMES and value:
            return "***"
    return value


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every section: frozen, strict, and a repr that never shows secrets."""

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}={redact_value(name, getattr(self, name))!r}" for name in self.__struct_fields__
        )
        return f"{type(self).__name__}({parts})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [(name, redact_value(name, getattr(self, name))) for name in self.__struct_fields__]
