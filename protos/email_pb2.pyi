import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmailStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[EmailStatus]
    PENDING: _ClassVar[EmailStatus]
    SENDING: _ClassVar[EmailStatus]
    RETRYING: _ClassVar[EmailStatus]
    SENT: _ClassVar[EmailStatus]
    FAILED: _ClassVar[EmailStatus]
    SUPPRESSED: _ClassVar[EmailStatus]
    SCHEDULED: _ClassVar[EmailStatus]
    CANCELLED: _ClassVar[EmailStatus]
    BOUNCED: _ClassVar[EmailStatus]
    COMPLAINED: _ClassVar[EmailStatus]
    DELIVERED: _ClassVar[EmailStatus]
    DELAYED: _ClassVar[EmailStatus]
STATUS_UNSPECIFIED: EmailStatus
PENDING: EmailStatus
SENDING: EmailStatus
RETRYING: EmailStatus
SENT: EmailStatus
FAILED: EmailStatus
SUPPRESSED: EmailStatus
SCHEDULED: EmailStatus
CANCELLED: EmailStatus
BOUNCED: EmailStatus
COMPLAINED: EmailStatus
DELIVERED: EmailStatus
DELAYED: EmailStatus

class FeedbackDetail(_message.Message):
    __slots__ = ("kind", "recipient", "source", "source_id", "bounce_type", "status_code", "diagnostic", "feedback_type", "reporter")
    KIND_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    BOUNCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTIC_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_TYPE_FIELD_NUMBER: _ClassVar[int]
    REPORTER_FIELD_NUMBER: _ClassVar[int]
    kind: str
    recipient: str
    source: str
    source_id: str
    bounce_type: str
    status_code: str
    diagnostic: str
    feedback_type: str
    reporter: str
    def __init__(self, kind: _Optional[str] = ..., recipient: _Optional[str] = ..., source: _Optional[str] = ..., source_id: _Optional[str] = ..., bounce_type: _Optional[str] = ..., status_code: _Optional[str] = ..., diagnostic: _Optional[str] = ..., feedback_type: _Optional[str] = ..., reporter: _Optional[str] = ...) -> None: ...

class Attachment(_message.Message):
    __slots__ = ("filename", "content_type", "content")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    filename: str
    content_type: str
    content: bytes
    def __init__(self, filename: _Optional[str] = ..., content_type: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class AttemptRecord(_message.Message):
    __slots__ = ("attempt", "at", "status", "provider", "smtp_code", "reply", "feedback")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SMTP_CODE_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    at: _timestamp_pb2.Timestamp
    status: EmailStatus
    provider: str
    smtp_code: int
    reply: str
    feedback: FeedbackDetail
    def __init__(self, attempt: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[EmailStatus, str]] = ..., provider: _Optional[str] = ..., smtp_code: _Optional[int] = ..., reply: _Optional[str] = ..., feedback: _Optional[_Union[FeedbackDetail, _Mapping]] = ...) -> None: ...

class EmailDocument(_message.Message):
    __slots__ = ("event_id", "recipient", "template", "variables", "category", "subject", "attachments", "status", "idempotency_key", "created_at", "updated_at", "sent_at", "attempts", "error", "provider", "provider_message_id", "smtp_reply", "latency_ms", "history", "from_address", "from_name", "reply_to", "cc", "bcc", "headers", "tags", "metadata", "send_at")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SMTP_REPLY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FROM_NAME_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    CC_FIELD_NUMBER: _ClassVar[int]
    BCC_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    recipient: str
    template: str
    variables: _struct_pb2.Struct
    category: str
    subject: str
    attachments: _containers.RepeatedCompositeFieldContainer[Attachment]
    status: EmailStatus
    idempotency_key: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    sent_at: _timestamp_pb2.Timestamp
    attempts: int
    error: str
    provider: str
    provider_message_id: str
    smtp_reply: str
    latency_ms: float
    history: _containers.RepeatedCompositeFieldContainer[AttemptRecord]
    from_address: str
    from_name: str
    reply_to: str
    cc: _containers.RepeatedScalarFieldContainer[str]
    bcc: _containers.RepeatedScalarFieldContainer[str]
    headers: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    send_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., recipient: _Optional[str] = ..., template: _Optional[str] = ..., variables: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., category: _Optional[str] = ..., subject: _Optional[str] = ..., attachments: _Optional[_Iterable[_Union[Attachment, _Mapping]]] = ..., status: _Optional[_Union[EmailStatus, str]] = ..., idempotency_key: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ..., error: _Optional[str] = ..., provider: _Optional[str] = ..., provider_message_id: _Optional[str] = ..., smtp_reply: _Optional[str] = ..., latency_ms: _Optional[float] = ..., history: _Optional[_Iterable[_Union[AttemptRecord, _Mapping]]] = ..., from_address: _Optional[str] = ..., from_name: _Optional[str] = ..., reply_to: _Optional[str] = ..., cc: _Optional[_Iterable[str]] = ..., bcc: _Optional[_Iterable[str]] = ..., headers: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., send_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SaveEmailRequest(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: EmailDocument
    def __init__(self, document: _Optional[_Union[EmailDocument, _Mapping]] = ...) -> None: ...

class SaveEmailResponse(_message.Message):
    __slots__ = ("event_id", "created", "document")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    created: bool
    document: EmailDocument
    def __init__(self, event_id: _Optional[str] = ..., created: _Optional[bool] = ..., document: _Optional[_Union[EmailDocument, _Mapping]] = ...) -> None: ...

class SaveEmailsRequest(_message.Message):
    __slots__ = ("documents",)
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[EmailDocument]
    def __init__(self, documents: _Optional[_Iterable[_Union[EmailDocument, _Mapping]]] = ...) -> None: ...

class SaveEmailsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SaveEmailResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SaveEmailResult, _Mapping]]] = ...) -> None: ...

class SaveEmailResult(_message.Message):
    __slots__ = ("event_id", "created", "document", "error")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    created: bool
    document: EmailDocument
    error: str
    def __init__(self, event_id: _Optional[str] = ..., created: _Optional[bool] = ..., document: _Optional[_Union[EmailDocument, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class GetEmailRequest(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class GetEmailResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: EmailDocument
    def __init__(self, document: _Optional[_Union[EmailDocument, _Mapping]] = ...) -> None: ...

class SearchEmailsRequest(_message.Message):
    __slots__ = ("recipient", "status", "category", "created_from", "created_to", "tags", "metadata", "page_size", "page_token")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FROM_FIELD_NUMBER: _ClassVar[int]
    CREATED_TO_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    recipient: str
    status: EmailStatus
    category: str
    created_from: _timestamp_pb2.Timestamp
    created_to: _timestamp_pb2.Timestamp
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    page_size: int
    page_token: str
    def __init__(self, recipient: _Optional[str] = ..., status: _Optional[_Union[EmailStatus, str]] = ..., category: _Optional[str] = ..., created_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchEmailsResponse(_message.Message):
    __slots__ = ("documents", "next_page_token", "total")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[EmailDocument]
    next_page_token: str
    total: int
    def __init__(self, documents: _Optional[_Iterable[_Union[EmailDocument, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class CancelEmailRequest(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class CancelEmailResponse(_message.Message):
    __slots__ = ("event_id", "status")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    status: EmailStatus
    def __init__(self, event_id: _Optional[str] = ..., status: _Optional[_Union[EmailStatus, str]] = ...) -> None: ...

class RequestEmailRequest(_message.Message):
    __slots__ = ("recipient", "template", "variables", "category", "subject", "attachments", "idempotency_key", "from_address", "from_name", "reply_to", "cc", "bcc", "headers", "tags", "metadata", "send_at")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FROM_NAME_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    CC_FIELD_NUMBER: _ClassVar[int]
    BCC_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    recipient: str
    template: str
    variables: _struct_pb2.Struct
    category: str
    subject: str
    attachments: _containers.RepeatedCompositeFieldContainer[Attachment]
    idempotency_key: str
    from_address: str
    from_name: str
    reply_to: str
    cc: _containers.RepeatedScalarFieldContainer[str]
    bcc: _containers.RepeatedScalarFieldContainer[str]
    headers: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    send_at: str
    def __init__(self, recipient: _Optional[str] = ..., template: _Optional[str] = ..., variables: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., category: _Optional[str] = ..., subject: _Optional[str] = ..., attachments: _Optional[_Iterable[_Union[Attachment, _Mapping]]] = ..., idempotency_key: _Optional[str] = ..., from_address: _Optional[str] = ..., from_name: _Optional[str] = ..., reply_to: _Optional[str] = ..., cc: _Optional[_Iterable[str]] = ..., bcc: _Optional[_Iterable[str]] = ..., headers: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., send_at: _Optional[str] = ...) -> None: ...

class RequestEmailResponse(_message.Message):
    __slots__ = ("event_id", "status", "duplicate")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    status: EmailStatus
    duplicate: bool
    def __init__(self, event_id: _Optional[str] = ..., status: _Optional[_Union[EmailStatus, str]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class RequestEmailsRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RequestEmailRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RequestEmailRequest, _Mapping]]] = ...) -> None: ...

class RequestEmailsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RequestEmailResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RequestEmailResult, _Mapping]]] = ...) -> None: ...

class RequestEmailResult(_message.Message):
    __slots__ = ("event_id", "status", "duplicate", "error")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    status: EmailStatus
    duplicate: bool
    error: str
    def __init__(self, event_id: _Optional[str] = ..., status: _Optional[_Union[EmailStatus, str]] = ..., duplicate: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...
