"""Checks on an email request before it is accepted: one clear error per bad field.

Everything a caller controls is checked here, at the edge, so that nothing past
it (the store, the bus, the renderer, the SMTP client) meets a value it cannot
handle: bad input is refused with ``InvalidField`` naming the field, it never
crashes an actor or leaves an email stuck. ``validate_request`` raises nothing
else, whatever it is given.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from email_validator import EmailNotValidError, validate_email

from actors.domain.templates import (
    HEADER_BREAKERS,
    RenderedEmail,
    RenderError,
    TemplateNotFound,
    TemplateRenderer,
    check_template_name,
    has_line_break,
)

if TYPE_CHECKING:
    from actors.domain.schema import EmailSendEvent
    from config import LimitsConfig

__all__ = [
    "CATEGORY_PATTERN",
    "InvalidField",
    "ascii_address",
    "normalize_address",
    "normalize_recipient",
    "search_recipient",
    "validate_event",
    "validate_event_rendered",
    "validate_request",
    "validate_request_rendered",
]

CATEGORY_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")

# RFC 5321 section 4.5.3.1: local part 64 octets, domain 255, path 256 including
# the angle brackets, hence 254 for the address itself.
MAX_LOCAL_PART_OCTETS = 64
MAX_DOMAIN_OCTETS = 253
MAX_ADDRESS_OCTETS = 254
MAX_FILENAME_CHARS = 255
MAX_VARIABLE_DEPTH = 32
# Room for the headers a provider adds (From, To, Date, Message-ID, MIME parts).
HEADER_ALLOWANCE_BYTES = 2048

_INT64 = (-(2**63), 2**63 - 1)
_FILENAME_FORBIDDEN = re.compile(r"[/\\\x00-\x1f\x7f]")


class InvalidField(ValueError):
    """A request field that cannot be accepted; ``str()`` is ``"<field>: <reason>"``."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(field, reason)

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def _show(value: Any, limit: int = 60) -> str:
    """A short repr for error messages: a huge value must not make a huge error."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(field: str, value: Any, *, header: bool) -> str:
    if not isinstance(value, str):
        raise InvalidField(field, f"must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField(field, "is not valid Unicode (lone surrogate)") from None
    if header and HEADER_BREAKERS.search(value):
        raise InvalidField(field, "must not contain line breaks (CR, LF) or control characters")
    return value


def normalize_recipient(recipient: Any) -> str:
    """Check one address (syntax only, no DNS) and return its normalized form.

    Internationalized domains are accepted (``user@bücher.example``) and the
    RFC 5321 limits are enforced on what would be sent: the local part in UTF-8
    octets and the domain in its ASCII (IDNA) form.
    """
    if type(recipient) is str:
        ok, value = _checked_address(recipient)
        if ok:
            return value
        raise InvalidField("recipient", value)
    return _normalize_recipient(recipient)


def normalize_address(address: Any, field: str) -> str:
    """:func:`normalize_recipient` for another address field (from, cc, ...), named ``field``."""
    try:
        return normalize_recipient(address)
    except InvalidField as exc:
        raise InvalidField(field, exc.reason) from None


def search_recipient(recipient: str) -> str:
    """The form a search must look for: what ``normalize_recipient`` stores for it.

    A caller searches for the address as they wrote it (``Case.X@Example.COM``)
    while it is stored normalized (``Case.X@example.com``). A string that is not
    a valid address is looked for as written: no checked request is stored under
    it, and a search is no place to refuse input.
    """
    ok, value = _checked_address(recipient)
    return value if ok else recipient


@functools.lru_cache(maxsize=16384)
def _checked_address(recipient: str) -> tuple[bool, str]:
    """``(True, normalized)`` or ``(False, reason)``: a pure function of the string,
    cached, since one address is checked by auth and again by the email server
    (the same process when embedded), and again on every retry."""
    try:
        return True, _normalize_recipient(recipient)
    except InvalidField as exc:
        return False, exc.reason


@functools.lru_cache(maxsize=4096)
def ascii_address(address: str) -> str | None:
    """``address`` (as :func:`normalize_recipient` returned it) with its domain in IDNA
    A-labels (``user@bücher.example`` -> ``user@xn--bcher-kva.example``), what goes to a
    server without SMTPUTF8 (RFC 6531); None when the local part is not ASCII: such an
    address has no ASCII form. The A-labels are email_validator's, the same IDNA 2008
    conversion that checked the domain's length."""
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        return None
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:  # not an address normalize_recipient returned
        raise ValueError(f"{address!r}: {exc}") from None
    return f"{local}@{checked.ascii_domain}"


def _normalize_recipient(recipient: Any) -> str:
    address = _text("recipient", recipient, header=True)
    if not address:
        raise InvalidField("recipient", "is required")
    if len(address.encode("utf-8")) > MAX_ADDRESS_OCTETS:
        raise InvalidField("recipient", f"is longer than {MAX_ADDRESS_OCTETS} octets")
    try:
        checked = validate_email(address, check_deliverability=False, strict=True)
    except EmailNotValidError as exc:
        raise InvalidField("recipient", str(exc)) from None
    local = len(checked.local_part.encode("utf-8"))
    domain = len(checked.ascii_domain.encode("ascii"))
    if local > MAX_LOCAL_PART_OCTETS:
        raise InvalidField(
            "recipient", f"the local part is {local} octets, more than {MAX_LOCAL_PART_OCTETS}"
        )
    if domain > MAX_DOMAIN_OCTETS:
        raise InvalidField(
            "recipient", f"the domain is {domain} octets, more than {MAX_DOMAIN_OCTETS}"
        )
    if local + 1 + domain > MAX_ADDRESS_OCTETS:
        raise InvalidField("recipient", f"is longer than {MAX_ADDRESS_OCTETS} octets")
    return checked.normalized


def _check_json(value: Any, path: str, depth: int) -> None:
    """Only JSON types: what crosses the bus must read the same in any language."""
    if depth > MAX_VARIABLE_DEPTH:
        raise InvalidField("variables", f"{path} is nested more than {MAX_VARIABLE_DEPTH} deep")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise InvalidField("variables", f"{path} is an integer outside the 64-bit range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidField("variables", f"{path} is {value!r}, not a JSON number")
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidField("variables", f"{path} is not valid Unicode") from None
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidField("variables", f"{path} has a non-string key {_show(key)}")
            _check_json(key, f"{path} key", depth + 1)
            _check_json(item, f"{path}.{key}", depth + 1)
        return
    raise InvalidField("variables", f"{path} is a {type(value).__name__}, not a JSON value")


def _check_attachments(attachments: Any, limits: LimitsConfig) -> int:
    """Check each attachment; return their size once base64-encoded, as sent."""
    if attachments is None:
        return 0
    if isinstance(attachments, str | bytes) or not isinstance(attachments, Sequence):
        raise InvalidField("attachments", "must be a list")
    if len(attachments) > limits.max_attachments:
        raise InvalidField(
            "attachments",
            f"{len(attachments)} attachments, more than the limit of {limits.max_attachments}",
        )
    allowed = {t.lower() for t in limits.allowed_attachment_types}
    encoded = 0
    for i, att in enumerate(attachments):
        field = f"attachments[{i}]"
        # Duck-typed like schema.Attachment: filename, content_type, content.
        filename = getattr(att, "filename", None)
        content_type = getattr(att, "content_type", None)
        content = getattr(att, "content", None)
        name = _text(f"{field}.filename", filename, header=True)
        if not name.strip() or name in (".", ".."):
            raise InvalidField(f"{field}.filename", "must not be empty")
        if len(name) > MAX_FILENAME_CHARS:
            raise InvalidField(
                f"{field}.filename", f"is longer than {MAX_FILENAME_CHARS} characters"
            )
        if _FILENAME_FORBIDDEN.search(name):
            raise InvalidField(
                f"{field}.filename",
                f"{_show(name)} contains a path separator or a control character",
            )
        ctype = _text(f"{field}.content_type", content_type, header=True)
        media = ctype.split(";", 1)[0].strip().lower()
        if media not in allowed:
            raise InvalidField(
                f"{field}.content_type",
                f"{_show(media)} is not allowed (allowed: {', '.join(sorted(allowed))})",
            )
        if not isinstance(content, bytes | bytearray | memoryview):
            raise InvalidField(f"{field}.content", "must be bytes")
        size = len(content)
        if size > limits.max_attachment_bytes:
            raise InvalidField(
                f"{field}.content",
                f"is {size} bytes, more than the limit of {limits.max_attachment_bytes}",
            )
        b64 = 4 * math.ceil(size / 3)
        encoded += b64 + 2 * math.ceil(b64 / 76)  # base64 lines of 76 plus CRLF
    return encoded


def validate_request(
    recipient: Any,
    template: Any,
    variables: Any,
    category: Any,
    subject: Any,
    attachments: Any,
    limits: LimitsConfig,
    renderer: TemplateRenderer,
    addressing: Any = None,
) -> str:
    """Check a whole request; return the normalized recipient or raise InvalidField.

    Arguments are typed ``Any`` on purpose: they come from the outside (gRPC,
    JSON) and a wrong type is one more thing to report, not to crash on. The
    template is rendered once with the variables, so that a missing variable is
    reported now, to the caller, rather than later as a FAILED email.
    ``addressing``: the request (or event, document) whose ``headers``, ``cc``, ``bcc`` and
    ``reply_to`` count toward ``limits.max_message_bytes`` with the rest (the addressing
    checks, :func:`actors.domain.addressing.check_addressing`, check them otherwise).
    """
    return validate_request_rendered(
        recipient, template, variables, category, subject, attachments, limits, renderer,
        addressing,
    )[0]  # fmt: skip


def validate_request_rendered(
    recipient: Any,
    template: Any,
    variables: Any,
    category: Any,
    subject: Any,
    attachments: Any,
    limits: LimitsConfig,
    renderer: TemplateRenderer,
    addressing: Any = None,
) -> tuple[str, RenderedEmail]:
    """``validate_request``, also returning the email it rendered to check the request.

    The rendering is ``renderer.render(template, variables, subject)`` of an
    accepted request, so whoever sends it can use it instead of rendering again.
    """
    address = normalize_recipient(recipient)

    try:
        name = check_template_name(template)
    except TemplateNotFound as exc:
        raise InvalidField("template", f"{exc.name}: {exc.reason}") from None
    if name not in renderer:
        known = ", ".join(renderer.names())
        raise InvalidField("template", f"no template named {name!r} (known: {known})")

    _text("category", category, header=True)
    if not CATEGORY_PATTERN.fullmatch(category):
        raise InvalidField(
            "category", f"must match ^{CATEGORY_PATTERN.pattern}$, got {_show(category)}"
        )

    if subject is not None:
        _text("subject", subject, header=True)
        if not subject.strip():
            raise InvalidField("subject", "must not be blank (omit it to use the template's)")
        if len(subject) > limits.max_subject_chars:
            raise InvalidField(
                "subject",
                f"is {len(subject)} characters, more than the limit of {limits.max_subject_chars}",
            )

    if variables is None:
        variables = {}
    if not isinstance(variables, Mapping):
        raise InvalidField("variables", f"must be an object, got {type(variables).__name__}")
    _check_json(variables, "variables", 0)
    try:
        size = len(msgspec.json.encode(variables))
    except (TypeError, ValueError, OverflowError) as exc:  # _check_json should prevent it
        raise InvalidField("variables", f"cannot be encoded as JSON: {exc}") from None
    if size > limits.max_variables_bytes:
        raise InvalidField(
            "variables",
            f"are {size} bytes as JSON, more than the limit of {limits.max_variables_bytes}",
        )
    if subject is None:
        for var in sorted(renderer.subject_variables(name)):
            if var in variables and has_line_break(variables[var]):
                raise InvalidField(
                    "variables",
                    f"{var!r} is used in the subject and must not contain line breaks "
                    "or control characters",
                )

    encoded_attachments = _check_attachments(attachments, limits)

    try:
        rendered = renderer.render(name, variables, subject)
    except RenderError as exc:
        if exc.variable == "subject":
            field = "subject"
        elif exc.security or (exc.variable is None and exc.cause is None):
            field = "template"  # the template's own fault, whatever the variables
        else:
            field = "variables"
        raise InvalidField(field, str(exc)) from None
    except TemplateNotFound as exc:  # pragma: no cover - checked above
        raise InvalidField("template", str(exc)) from None

    content = (
        HEADER_ALLOWANCE_BYTES
        + len(rendered.subject.encode("utf-8"))
        + len(rendered.text.encode("utf-8"))
        + len((rendered.html or "").encode("utf-8"))
        + encoded_attachments
    )
    added = _addressing_bytes(addressing)
    total = content + sum(added.values())
    if total > limits.max_message_bytes:
        # Blame what tipped it over: the body, or the largest of the request's own extras.
        field = "attachments" if encoded_attachments else "variables"
        if content <= limits.max_message_bytes:
            field = max(added, key=lambda name: added[name])
        extras = ", ".join(f"{name} {n}" for name, n in added.items() if n)
        raise InvalidField(
            field,
            f"the message would be about {total} bytes"
            + (f" (of which {extras})" if extras else "")
            + f", more than the limit of {limits.max_message_bytes} (limits.max_message_bytes)",
        )
    return address, rendered


def _addressing_bytes(given: Any) -> dict[str, int]:
    """What a request's own headers and addresses add to its message, in bytes, by field
    (``cc``, ``bcc``, ``reply_to``, ``headers``): each written as a header line (bcc only in
    the envelope, one RCPT TO each). Values of the wrong type count nothing here; the
    addressing checks refuse them."""
    if given is None:
        return {}

    def size(value: Any) -> int:
        return len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else 0

    def addresses(values: Any, line: int) -> int:
        if isinstance(values, str) or not isinstance(values, Sequence):
            return 0
        return sum(size(v) + line for v in values)

    headers = getattr(given, "headers", None)
    reply_to = getattr(given, "reply_to", None)
    return {
        "headers": sum(  # "Name: value" CRLF
            size(name) + size(value) + 4 for name, value in headers.items()
        ) if isinstance(headers, Mapping) else 0,
        "cc": addresses(getattr(given, "cc", ()), len(",\r\n ")),
        "bcc": addresses(getattr(given, "bcc", ()), len("RCPT TO:<>\r\n")),
        "reply_to": size(reply_to) + len("Reply-To: \r\n") if size(reply_to) else 0,
    }  # fmt: skip


def validate_event(event: EmailSendEvent, limits: LimitsConfig, renderer: TemplateRenderer) -> str:
    """``validate_request`` on the fields of a send event; returns the normalized recipient."""
    return validate_event_rendered(event, limits, renderer)[0]


def validate_event_rendered(
    event: EmailSendEvent, limits: LimitsConfig, renderer: TemplateRenderer
) -> tuple[str, RenderedEmail]:
    """``validate_event``, also returning the email rendered from the event's fields."""
    return validate_request_rendered(
        event.recipient,
        event.template,
        event.variables,
        event.category,
        event.subject,
        event.attachments,
        limits,
        renderer,
        event,
    )
