"""Build a Config: TOML profile, then ``MAILACTORS__SECTION__KEY`` variables, then overrides.

Every value is checked against the field's annotation before the Struct is
built, one key at a time, so an error can say exactly which key is wrong, what
was expected, what was found and where it came from. Nothing is guessed: an
unknown key anywhere is an error, never ignored.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

from ._errors import ConfigError
from ._model import LOADER_ONLY_FIELDS, Config
from ._secrets import redact_url
from ._types import PATH_MARK

ENV_PREFIX = "MAILACTORS__"
PROFILE_DIR = Path(__file__).resolve().parent
# The project root: relative paths in a profile are resolved against it.
PROJECT_ROOT = PROFILE_DIR.parent

_PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_OVERRIDES = "overrides"

Key = tuple[str, ...]


def profile_names() -> list[str]:
    """The profiles shipped next to this package (``embedded``, ``distributed``...)."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml") if _PROFILE_NAME.fullmatch(p.stem))


def profile_path(profile: str | os.PathLike[str]) -> Path:
    """A bare name is a shipped profile; anything else is a path used as is."""
    if isinstance(profile, str) and _PROFILE_NAME.fullmatch(profile):
        return PROFILE_DIR / f"{profile}.toml"
    return Path(profile)


def load_config(
    profile: str | os.PathLike[str] = "embedded",
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load a profile, apply environment variables then ``overrides``; check everything.

    ``env`` defaults to ``os.environ``. ``overrides`` is a nested mapping
    (``{"store": {"batch_size": 10}}``) or uses dotted keys (``{"store.batch_size": 10}``);
    it wins over both the file and the environment. Raises ConfigError.
    """
    path = profile_path(profile)
    file = str(path)
    data = _read_toml(path, profile)
    sources: dict[Key, str] = {}
    environ = os.environ if env is None else env
    for name in sorted(environ):
        if name.upper().startswith(ENV_PREFIX):
            _apply_env(data, sources, name, environ[name], file)
    if overrides:
        for raw_key, value in overrides.items():
            key = tuple(str(raw_key).split(".")) if "." in str(raw_key) else (str(raw_key),)
            _merge(data, sources, key, value, _OVERRIDES)
    _check(data, Config, (), sources, file)
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        # Only cross-field checks (__post_init__) get here: types were checked above.
        message, _, at = str(exc).rpartition(" - at `")
        key = _key_from_msgspec_path(at.rstrip("`")) if message else ()
        # The check spans the section: name every place its values came from.
        under = sorted({s for k, s in sources.items() if k[: len(key)] == key})
        if not key:  # a check across sections: the places of the keys its message names
            named = message or str(exc)
            under = sorted({s for k, s in sources.items() if ".".join(k) in named})
        source = ", ".join(under) if under else _source(key, sources, file)
        raise ConfigError(".".join(key), message or str(exc), source=source, file=file) from None
    return _resolve_paths(msgspec.structs.replace(config, profile=file))


def _read_toml(path: Path, profile: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        known = ", ".join(profile_names())
        raise ConfigError(
            "", f"no profile {os.fspath(profile)!r}: {path} does not exist (shipped: {known})"
        ) from None
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"invalid TOML: {exc}", file=str(path)) from None


# --- environment -------------------------------------------------------------------


def _apply_env(
    data: dict[str, Any], sources: dict[Key, str], name: str, raw: str, file: str
) -> None:
    source = f"environment variable {name}"
    key = tuple(name[len(ENV_PREFIX) :].lower().split("__"))
    dotted = ".".join(key)
    if any(not part for part in key):
        raise ConfigError(dotted or name, "malformed variable name", source=source, file=file)
    tp = _type_at(key, source, file)
    _merge(data, sources, key, _from_env(raw, tp, dotted, source, file), source)


def _type_at(key: Key, source: str, file: str) -> Any:
    """The annotated type of the field at ``key``; ConfigError for an unknown key."""
    tp: Any = Config
    for depth, part in enumerate(key):
        here = key[: depth + 1]
        if _is_struct(tp):
            fields = {f.encode_name: f for f in msgspec.structs.fields(tp)}
            if part not in fields or (depth == 0 and part in LOADER_ONLY_FIELDS):
                raise _unknown(here, list(fields), source, file)
            tp = fields[part].type
        elif typing.get_origin(_strip(tp)) is dict:
            tp = typing.get_args(_strip(tp))[1]
        else:
            raise ConfigError(".".join(here), "unknown key", source=source, file=file)
    return tp


def _from_env(raw: str, tp: Any, dotted: str, source: str, file: str) -> Any:
    """Convert a variable's text to the field's type: scalars as text, the rest as JSON."""
    info = mi.type_info(tp)
    while isinstance(info, mi.Metadata):
        info = info.type
    text_types = (mi.StrType, mi.LiteralType, mi.EnumType)
    if isinstance(info, text_types):
        return raw
    try:
        if isinstance(info, mi.IntType | mi.FloatType | mi.BoolType):
            return msgspec.convert(raw.strip(), tp, strict=False)
        return msgspec.json.decode(raw.encode())
    except (msgspec.ValidationError, msgspec.DecodeError):
        how = "" if isinstance(info, mi.IntType | mi.FloatType | mi.BoolType) else " (as JSON)"
        raise ConfigError(
            dotted, f"expected {describe(tp)}{how}, got {_shown(raw)}", source=source, file=file
        ) from None


def _merge(
    data: dict[str, Any], sources: dict[Key, str], key: Key, value: Any, source: str
) -> None:
    """Set ``key`` in the nested ``data``; a mapping value merges into what is there."""
    node = data
    for depth, part in enumerate(key[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
            sources.setdefault(key[: depth + 1], source)
        node = child
    last = key[-1]
    if isinstance(value, Mapping) and isinstance(node.get(last), dict):
        for k, v in value.items():
            _merge(data, sources, (*key, str(k)), v, source)
        return
    node[last] = dict(value) if isinstance(value, Mapping) else value
    sources[key] = source


# --- checking ----------------------------------------------------------------------


def _check(value: Any, tp: Any, key: Key, sources: dict[Key, str], file: str) -> None:
    if _is_struct(tp):
        if not isinstance(value, dict):
            raise _error(key, f"expected a table, got {_shown(value)}", sources, file)
        fields = {f.encode_name: f for f in msgspec.structs.fields(tp)}
        for name, sub in value.items():
            if name not in fields or (not key and name in LOADER_ONLY_FIELDS):
                raise _unknown(
                    (*key, name), list(fields), _source((*key, name), sources, file), file
                )
            _check(sub, fields[name].type, (*key, name), sources, file)
        return
    bare = _strip(tp)
    if typing.get_origin(bare) is dict and isinstance(value, dict):
        key_tp, value_tp = typing.get_args(bare)
        for k, sub in value.items():
            _check_leaf(k, key_tp, (*key, str(k)), sources, file, what="key ")
            _check(sub, value_tp, (*key, str(k)), sources, file)
        return
    args = typing.get_args(bare)
    if isinstance(bare, types.UnionType) and value is not None:  # `Section | None`
        sections = [a for a in args if _is_struct(a)]
        if len(sections) == 1 and type(None) in args:
            _check(value, sections[0], key, sources, file)
            return
    if typing.get_origin(bare) in (list, tuple) and isinstance(value, list):
        if args and _is_struct(args[0]) and args[1:] in ((), (...,)):  # a list of tables
            for i, sub in enumerate(value):
                _check(sub, args[0], (*key, str(i)), sources, file)
            return
    _check_leaf(value, tp, key, sources, file)


def _check_leaf(
    value: Any, tp: Any, key: Key, sources: dict[Key, str], file: str, what: str = ""
) -> None:
    try:
        msgspec.convert(value, tp)
    except msgspec.ValidationError:
        raise _error(
            key, f"expected {what}{describe(tp)}, got {_shown(value)}", sources, file
        ) from None


def describe(tp: Any) -> str:
    """``Annotated[int, Meta(ge=1)]`` -> ``int >= 1``: the expectation in plain words."""
    return _describe(mi.type_info(tp))


def _describe(info: mi.Type) -> str:
    if isinstance(info, mi.Metadata):
        return _describe(info.type)
    if isinstance(info, mi.BoolType):
        return "bool (true/false)"
    if isinstance(info, mi.IntType | mi.FloatType):
        name = "int" if isinstance(info, mi.IntType) else "number"
        bounds = [
            f"{op} {_num(v)}"
            for op, v in ((">=", info.ge), (">", info.gt), ("<=", info.le), ("<", info.lt))
            if v is not None
        ]
        return " ".join([name, " and ".join(bounds)]) if bounds else name
    if isinstance(info, mi.StrType):
        text = "string"
        if info.pattern is not None:
            text += f" matching {info.pattern}"
        elif info.min_length:
            text = "non-empty string"
        return text
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(repr(v) for v in info.values)
    if isinstance(info, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        return f"list of {_describe(info.item_type)}"
    if isinstance(info, mi.DictType):
        return f"table of {_describe(info.key_type)} to {_describe(info.value_type)}"
    if isinstance(info, mi.StructType):
        return "a table"
    if isinstance(info, mi.UnionType):
        return " or ".join(_describe(t) for t in info.types)
    return type(info).__name__.removesuffix("Type").lower()


def _shown(value: Any) -> str:
    """The bad value for an error message, with any URL password hidden."""
    if isinstance(value, str) and "://" in value:
        value = redact_url(value)
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _num(v: float) -> str:
    return f"{v:g}"


# --- helpers -----------------------------------------------------------------------


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> ``X``."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_struct(tp: Any) -> bool:
    tp = _strip(tp)
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _source(key: Key, sources: dict[Key, str], file: str) -> str:
    for n in range(len(key), 0, -1):
        if key[:n] in sources:
            return sources[key[:n]]
    return file


def _error(key: Key, reason: str, sources: dict[Key, str], file: str) -> ConfigError:
    return ConfigError(".".join(key), reason, source=_source(key, sources, file), file=file)


def _unknown(key: Key, known: list[str], source: str, file: str) -> ConfigError:
    known = [k for k in known if not (len(key) == 1 and k in LOADER_ONLY_FIELDS)]
    close = difflib.get_close_matches(key[-1], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return ConfigError(".".join(key), "unknown key" + hint, source=source, file=file)


def _key_from_msgspec_path(path: str) -> Key:
    """``$.store.batch_size`` / ``$.limits.allowed_attachment_types[0]`` -> key tuple."""
    path = path.removeprefix("$").lstrip(".")
    return tuple(p for p in re.split(r"\.|\[", path.replace("]", "")) if p and p != "...")


def _resolve_paths(config: Config) -> Config:
    """Make every relative path field absolute, against the project root, not the cwd;
    what the services write (DataPathStr) against service.data_dir."""
    root_setting = config.service.root
    root = Path(root_setting) if root_setting else PROJECT_ROOT
    if not root.is_absolute():
        root = PROJECT_ROOT / root
    root = Path(os.path.normpath(root))

    data_setting = Path(config.service.data_dir or ".").expanduser()
    data_dir = Path(os.path.normpath(root / data_setting))

    def fix(section: msgspec.Struct) -> msgspec.Struct:
        changes: dict[str, Any] = {}
        for field in msgspec.structs.fields(section):
            value = getattr(section, field.name)
            if isinstance(value, msgspec.Struct):
                new = fix(value)
                if new is not value:
                    changes[field.name] = new
            elif isinstance(value, tuple) and any(isinstance(v, msgspec.Struct) for v in value):
                items = tuple(fix(v) if isinstance(v, msgspec.Struct) else v for v in value)
                if any(a is not b for a, b in zip(items, value, strict=True)):
                    changes[field.name] = items
            elif isinstance(value, dict) and any(
                isinstance(v, msgspec.Struct) for v in value.values()
            ):
                # a table of sections ([dkim.domains."example.com"]): paths inside them too
                entries = {
                    k: fix(v) if isinstance(v, msgspec.Struct) else v for k, v in value.items()
                }
                if any(entries[k] is not value[k] for k in value):
                    changes[field.name] = entries
            elif (mark := _path_mark(field.type)) and isinstance(value, str) and value:
                base = data_dir if mark == "data" else root
                resolved = os.path.normpath(base / Path(value).expanduser())
                if resolved != value:
                    changes[field.name] = resolved
        return msgspec.structs.replace(section, **changes) if changes else section

    fixed = fix(config)
    assert isinstance(fixed, Config)
    return msgspec.structs.replace(
        fixed, service=msgspec.structs.replace(fixed.service, root=str(root))
    )


def _path_mark(tp: Any) -> object:
    """The PATH_MARK of a path field (True, or "data" for what the services write); None."""
    if typing.get_origin(tp) is not typing.Annotated:
        return None
    for m in typing.get_args(tp)[1:]:
        if isinstance(m, msgspec.Meta) and (m.extra or {}).get(PATH_MARK):
            return m.extra[PATH_MARK]  # type: ignore[index]
    return None
