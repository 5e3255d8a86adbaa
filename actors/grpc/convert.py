"""Conversion between the gRPC messages of protos/email.proto and actors.domain.schema.

The msgspec structs in actors.domain.schema are the domain's own form; proto messages
exist only at the gRPC edge. This module is the one place that knows both, so
gRPC handlers and clients never copy fields one by one.

Three things need care, and are handled here rather than in every caller:

- Absence. Proto3 scalars have no None, so every field that is Optional in the
  schema is ``optional`` in the proto and is read back with ``HasField``. An
  unset Timestamp reads as the epoch, so it too is read through ``HasField``.
- Numbers in variables. ``google.protobuf.Struct`` stores every number as a
  double: integral values come back as ``int`` (so ``{"count": 3}`` survives
  the trip), and integers a double cannot hold exactly (beyond 2**53) are
  refused rather than silently rounded; send those as strings.
- Bad input. Anything that cannot be converted raises ``ConversionError``,
  a ValueError naming the offending field, which a gRPC handler answers with
  INVALID_ARGUMENT.

For documents whose variables are JSON values, ``document_from_proto`` undoes
``document_to_proto`` exactly. The one normalisation: an empty category reads
back as the default, "transactional" (proto3 cannot tell "" from unset).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from actors.domain.schema import (
    Attachment,
    AttemptRecord,
    EmailDocument,
    FeedbackDetail,
    Status,
    utcnow,
)
from protos import email_pb2

__all__ = [
    "DEFAULT_CATEGORY",
    "ConversionError",
    "attachment_from_proto",
    "attachment_to_proto",
    "attempt_from_proto",
    "attempt_to_proto",
    "datetime_to_timestamp",
    "document_from_proto",
    "document_to_proto",
    "get_datetime",
    "set_datetime",
    "status_from_proto",
    "status_to_proto",
    "struct_to_variables",
    "timestamp_to_datetime",
    "variables_to_struct",
]

DEFAULT_CATEGORY = "transactional"

# The largest integer magnitude a double holds exactly; JSON numbers in a
# Struct are doubles.
_MAX_EXACT_INT = 2**53


class ConversionError(ValueError):
    """A value that has no faithful form on the other side; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# --------------------------------------------------------------------------
# Status

_STATUS_TO_PROTO: dict[Status, email_pb2.EmailStatus] = {
    Status.PENDING: email_pb2.PENDING,
    Status.SENDING: email_pb2.SENDING,
    Status.RETRYING: email_pb2.RETRYING,
    Status.SENT: email_pb2.SENT,
    Status.FAILED: email_pb2.FAILED,
    Status.SUPPRESSED: email_pb2.SUPPRESSED,
    Status.BOUNCED: email_pb2.BOUNCED,
    Status.COMPLAINED: email_pb2.COMPLAINED,
    Status.DELIVERED: email_pb2.DELIVERED,
    Status.DELAYED: email_pb2.DELAYED,
    Status.SCHEDULED: email_pb2.SCHEDULED,
    Status.CANCELLED: email_pb2.CANCELLED,
}
_STATUS_FROM_PROTO: dict[int, Status] = {int(v): k for k, v in _STATUS_TO_PROTO.items()}


def status_to_proto(status: Status) -> email_pb2.EmailStatus:
    return _STATUS_TO_PROTO[status]


def status_from_proto(value: int, *, field: str = "status") -> Status:
    """The schema status for a proto enum value.

    STATUS_UNSPECIFIED and numbers this code does not know (proto3 enums are
    open, so a newer peer can send them) raise ConversionError.
    """
    try:
        return _STATUS_FROM_PROTO[int(value)]
    except KeyError:
        if value == email_pb2.STATUS_UNSPECIFIED:
            raise ConversionError(field, "status is unspecified") from None
        raise ConversionError(field, f"unknown status number {int(value)}") from None


# --------------------------------------------------------------------------
# Timestamps


def datetime_to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """A Timestamp for ``value``; a naive datetime is taken to be UTC."""
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def timestamp_to_datetime(ts: timestamp_pb2.Timestamp) -> datetime:
    """An aware UTC datetime (microsecond precision) for ``ts``."""
    result: datetime = ts.ToDatetime(tzinfo=UTC)
    return result


def get_datetime(msg: Message, field: str) -> datetime | None:
    """The Timestamp field ``field`` of ``msg`` as a UTC datetime, None if unset."""
    if not msg.HasField(field):
        return None
    return timestamp_to_datetime(getattr(msg, field))


def _optional(msg: Message, field: str) -> Any:
    """The proto3 optional field ``field`` of ``msg``; None when unset (absent in the schema)."""
    return getattr(msg, field) if msg.HasField(field) else None


def _set_optional(msg: Message, source: object, fields: tuple[str, ...]) -> None:
    """Set each of ``fields`` on ``msg`` from ``source`` where it is not None; None stays unset."""
    for field in fields:
        value = getattr(source, field)
        if value is not None:
            setattr(msg, field, value)


def set_datetime(msg: Message, field: str, value: datetime | None) -> None:
    """Set the Timestamp field ``field`` of ``msg``; None clears it."""
    if value is None:
        msg.ClearField(field)
    else:
        getattr(msg, field).FromDatetime(value)


# --------------------------------------------------------------------------
# Variables (google.protobuf.Struct)


def variables_to_struct(
    variables: Mapping[str, Any], *, field: str = "variables"
) -> struct_pb2.Struct:
    """A Struct holding ``variables``, which must be a JSON object.

    Allowed values: None, bool, int (|n| <= 2**53), finite float, str, and
    lists, tuples and string-keyed mappings of these.
    """
    struct = struct_pb2.Struct()
    _fill_struct(struct, variables, field)
    return struct


def struct_to_variables(struct: struct_pb2.Struct) -> dict[str, Any]:
    """The JSON object in ``struct``; integral numbers come back as int.

    A Struct is a protobuf map, which keeps no order, so keys come back sorted:
    the result is the same however the message was built or parsed.
    """
    return {key: _from_value(struct.fields[key]) for key in sorted(struct.fields)}


def _fill_struct(struct: struct_pb2.Struct, mapping: Mapping[Any, Any], path: str) -> None:
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise ConversionError(path, f"key {key!r} is not a string")
        _to_value(struct.fields[key], value, f"{path}.{key}")


def _to_value(target: struct_pb2.Value, value: Any, path: str) -> None:
    # bool before int: bool is a subclass of int.
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if abs(value) > _MAX_EXACT_INT:
            raise ConversionError(
                path, "integer too large to be exact as a JSON number; send it as a string"
            )
        target.number_value = float(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConversionError(path, f"{value!r} is not a JSON number")
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, Mapping):
        target.struct_value.SetInParent()  # so that {} is an object, not null
        _fill_struct(target.struct_value, value, path)
    elif isinstance(value, list | tuple):
        target.list_value.SetInParent()  # so that [] is a list, not null
        for index, item in enumerate(value):
            _to_value(target.list_value.values.add(), item, f"{path}[{index}]")
    else:
        raise ConversionError(path, f"a {type(value).__name__} is not a JSON value")


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number: float = value.number_value
        if number.is_integer() and abs(number) <= _MAX_EXACT_INT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_variables(value.struct_value)
    if kind == "list_value":
        return [_from_value(item) for item in value.list_value.values]
    return None  # null_value, or a Value with nothing set


# --------------------------------------------------------------------------
# Attachments and attempt records


def attachment_to_proto(attachment: Attachment) -> email_pb2.Attachment:
    return email_pb2.Attachment(
        filename=attachment.filename,
        content_type=attachment.content_type,
        content=attachment.content,
    )


def attachment_from_proto(msg: email_pb2.Attachment) -> Attachment:
    return Attachment(
        filename=msg.filename, content_type=msg.content_type, content=bytes(msg.content)
    )


def attempt_to_proto(record: AttemptRecord) -> email_pb2.AttemptRecord:
    msg = email_pb2.AttemptRecord(attempt=record.attempt, status=status_to_proto(record.status))
    msg.at.FromDatetime(record.at)
    _set_optional(msg, record, ("provider", "smtp_code", "reply"))
    if record.feedback is not None:
        fb = record.feedback
        msg.feedback.CopyFrom(
            email_pb2.FeedbackDetail(
                kind=fb.kind, recipient=fb.recipient, source=fb.source, source_id=fb.source_id
            )
        )
        _set_optional(msg.feedback, fb, _FEEDBACK_OPTIONAL)
    return msg


_FEEDBACK_OPTIONAL = ("bounce_type", "status_code", "diagnostic", "feedback_type", "reporter")


def _feedback_from_proto(msg: email_pb2.AttemptRecord) -> FeedbackDetail | None:
    if not msg.HasField("feedback"):
        return None
    fb = msg.feedback
    return FeedbackDetail(
        kind=fb.kind,
        recipient=fb.recipient,
        source=fb.source,
        source_id=fb.source_id,
        **{name: _optional(fb, name) for name in _FEEDBACK_OPTIONAL},
    )


def attempt_from_proto(msg: email_pb2.AttemptRecord, *, field: str = "attempt") -> AttemptRecord:
    at = get_datetime(msg, "at")
    if at is None:
        raise ConversionError(f"{field}.at", "missing")
    return AttemptRecord(
        attempt=msg.attempt,
        at=at,
        status=status_from_proto(msg.status, field=f"{field}.status"),
        provider=_optional(msg, "provider"),
        smtp_code=_optional(msg, "smtp_code"),
        reply=_optional(msg, "reply"),
        feedback=_feedback_from_proto(msg),
    )


# --------------------------------------------------------------------------
# Documents


# The document's optional scalars: None in the schema, unset in the proto.
_DOCUMENT_OPTIONAL = (
    "subject",
    "idempotency_key",
    "error",
    "provider",
    "provider_message_id",
    "smtp_reply",
    "latency_ms",
    "from_address",
    "from_name",
    "reply_to",
)


def document_to_proto(doc: EmailDocument) -> email_pb2.EmailDocument:
    """The proto form of ``doc``; raises ConversionError for non-JSON variables."""
    msg = email_pb2.EmailDocument(
        event_id=doc.event_id,
        recipient=doc.recipient,
        template=doc.template,
        category=doc.category,
        status=status_to_proto(doc.status),
        attempts=doc.attempts,
        attachments=[attachment_to_proto(a) for a in doc.attachments],
        history=[attempt_to_proto(r) for r in doc.history],
        cc=doc.cc,
        bcc=doc.bcc,
        headers=doc.headers,
        tags=doc.tags,
        metadata=doc.metadata,
    )
    msg.variables.CopyFrom(variables_to_struct(doc.variables))
    set_datetime(msg, "send_at", doc.send_at)
    set_datetime(msg, "created_at", doc.created_at)
    set_datetime(msg, "updated_at", doc.updated_at)
    set_datetime(msg, "sent_at", doc.sent_at)
    _set_optional(msg, doc, _DOCUMENT_OPTIONAL)
    return msg


def document_from_proto(msg: email_pb2.EmailDocument) -> EmailDocument:
    """The schema form of ``msg``.

    Unset fields take the schema's defaults: STATUS_UNSPECIFIED reads as
    PENDING, an empty category as "transactional", a missing created_at or
    updated_at as now. Unknown status numbers and attempt records without a
    time raise ConversionError.
    """
    status = (
        Status.PENDING
        if msg.status == email_pb2.STATUS_UNSPECIFIED
        else status_from_proto(msg.status)
    )
    return EmailDocument(
        event_id=msg.event_id,
        recipient=msg.recipient,
        template=msg.template,
        variables=struct_to_variables(msg.variables),
        category=msg.category or DEFAULT_CATEGORY,
        attachments=[attachment_from_proto(a) for a in msg.attachments],
        status=status,
        attempts=msg.attempts,
        **{field: _optional(msg, field) for field in _DOCUMENT_OPTIONAL},
        sent_at=get_datetime(msg, "sent_at"),
        history=[attempt_from_proto(r, field=f"history[{i}]") for i, r in enumerate(msg.history)],
        created_at=get_datetime(msg, "created_at") or utcnow(),
        updated_at=get_datetime(msg, "updated_at") or utcnow(),
        cc=list(msg.cc),
        bcc=list(msg.bcc),
        headers=dict(msg.headers),
        tags=list(msg.tags),
        metadata=dict(msg.metadata),
        send_at=get_datetime(msg, "send_at"),
    )
