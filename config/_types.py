"""The constrained field types every config section uses (one copy: ``_model`` and
``_webhooks`` import them from here, which neither could do from the other without a cycle)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

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
