"""Reading what comes back to a return path: DSNs, ARF complaints, other bounces, auto-replies.

What arrives at a VERP address is one of:

* a **DSN** (RFC 3464: ``multipart/report; report-type=delivery-status``), read
  per recipient: ``Action: failed`` with a 5.x.x ``Status`` is a hard bounce,
  with 4.x.x a soft one (the MTA gave up on a transient failure); ``delayed`` is
  a delay, ``delivered`` a delivery; ``relayed`` and ``expanded`` say nothing;
* an **ARF report** (RFC 5965: ``report-type=feedback-report``): a complaint
  with its ``Feedback-Type`` (``not-spam`` is not a complaint and is ignored);
* a **non-standard bounce** (Exim's own text, Yahoo's, old Exchange, qmail...),
  recognised by GNU Mailman's ``flufl.bounce`` detectors: a permanent failure is
  a hard bounce, a warning (flufl's temporary set) a delay; an SMTP reply found
  next to the address in the text gives the status code (and a 4.x.x one makes
  the bounce soft);
* an **auto-reply** (RFC 3834 ``Auto-Submitted: auto-replied``, ``X-Autoreply``,
  ``Precedence: auto_reply``, or bulk/junk precedence with a vacation subject):
  not a bounce, ignored;
* anything else: ignored (logged and counted by the caller).

The report also names its email in the attached original message (our
``X-Mailactors-Event-Id`` header, or the ``Message-ID`` derived from the
eventId): :func:`feedback_records` takes the eventId from the verified VERP
address and refuses a report whose original names another one.

Bounded: :func:`parse_report` refuses a message with more MIME parts or
multipart containers than allowed *before* parsing it (the count is an upper
bound read off the raw bytes), so nesting depth and work stay bounded. It is
plain CPU work; the inbound server runs it in a worker thread with a deadline.
"""

from __future__ import annotations

import email
import enum
import hashlib
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from flufl.bounce import all_failures

from actors.domain.event_checks import EVENT_ID_PATTERN
from actors.domain.mime import EVENT_ID_HEADER
from actors.feedback.events import BounceType, Feedback, FeedbackKind
from actors.feedback.verp import VerpAddress, VerpCodec

__all__ = [
    "FoundRecipient",
    "Mismatch",
    "Report",
    "ReportKind",
    "ReportRefused",
    "feedback_records",
    "parse_report",
]

log = logging.getLogger("mailactors.feedback")
# flufl.bounce logs every detector it runs (17 lines per message, at INFO) and every detector
# that trips over malformed input as an ERROR traceback: anyone can send us such input, and
# _non_standard logs it once, in one line.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

MAX_DIAGNOSTIC_CHARS = 500
MAX_RECIPIENTS = 100  # per report; an email has its recipient and a few copies (cc, bcc)

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_REPLY = re.compile(r"\b([245]\d\d)[ -](?:([245]\.\d{1,3}\.\d{1,3})\b)?")
_CONTAINER = re.compile(rb"(?im)^content-type:\s*(?:multipart|message)/")
_VACATION = re.compile(
    r"out of (the )?office|vacation|holiday|auto(matic)?[- ]?(reply|response|answer)|"
    r"^auto:|away from|abwesen|absence|congés|fuera de la oficina|r[ée]ponse automatique",
    re.IGNORECASE,
)
_DAEMON = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.IGNORECASE)
_EVENT_ID_LINE = re.compile(r"(?im)^" + re.escape(EVENT_ID_HEADER) + r":[ \t]*(\S+)")
_MESSAGE_ID_LINE = re.compile(r"(?im)^message-id:[ \t]*<([^<>@\s]+)@([^<>\s]+)>")


class ReportRefused(ValueError):
    """The message is not something we read: too many parts, too deep. The reason says which."""


class ReportKind(enum.StrEnum):
    DSN = "dsn"  # RFC 3464 delivery status notification
    ARF = "arf"  # RFC 5965 feedback report (a complaint)
    BOUNCE = "bounce"  # a non-standard bounce, recognised by flufl.bounce
    AUTO_REPLY = "auto-reply"  # RFC 3834 auto-reply, vacation message: not a bounce
    UNRECOGNISED = "unrecognised"


@dataclass(frozen=True, slots=True)
class FoundRecipient:
    """What a report says about one recipient."""

    kind: FeedbackKind
    recipient: str  # "" when the report redacts it (ARF): the email's own recipient then
    bounce_type: BounceType | None = None
    status_code: str | None = None
    diagnostic: str | None = None
    occurred_at: datetime | None = None
    feedback_type: str | None = None
    reporter: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """One parsed message: what it is, per recipient what it says, which email it names."""

    kind: ReportKind
    report_id: str  # its Message-ID, else a digest of its bytes (a resend dedupes either way)
    found: list[FoundRecipient] = field(default_factory=list)
    # eventIds the attached original names (X-Mailactors-Event-Id, Message-ID local part)
    original_event_ids: frozenset[str] = frozenset()
    date: datetime | None = None  # the report's own Date
    detector: str | None = None  # why it is what it is (a header, a DSN, a flufl detector)


# -- bounds ---------------------------------------------------------------------------------


def check_bounds(raw: bytes, max_parts: int, max_multiparts: int) -> None:
    """Refuse (ReportRefused) a message whose structure could pass the limits, unparsed.

    Every MIME part starts at a boundary line (``--...``), so the count of lines
    starting with ``--`` bounds the number of parts; every container declares a
    ``multipart/`` or ``message/`` content type, so that count bounds the nesting depth.
    """
    delimiters = raw.count(b"\n--")
    if delimiters > max_parts + max_multiparts:  # each container also has a closing line
        raise ReportRefused(f"too many MIME parts (up to {delimiters}; at most {max_parts})")
    containers = len(_CONTAINER.findall(raw))
    if containers > max_multiparts:
        raise ReportRefused(
            f"too many multipart containers ({containers}; at most {max_multiparts})"
        )


# -- parsing --------------------------------------------------------------------------------


def parse_report(raw: bytes, *, max_parts: int = 256, max_multiparts: int = 32) -> Report:
    """Read one message sent to a return path. Raises ReportRefused when it is out of bounds."""
    check_bounds(raw, max_parts, max_multiparts)
    msg = email.message_from_bytes(raw)
    report_id = _header(msg, "Message-ID").strip() or (
        "sha256:" + hashlib.sha256(raw).hexdigest()
    )
    date = _date(_header(msg, "Date"))
    originals = frozenset(_original_event_ids(msg))
    # By the parts, not only the top-level report-type: some MTAs wrap the report in
    # multipart/mixed or get the report-type parameter wrong.
    found = _arf(msg, date)
    if found:
        return Report(ReportKind.ARF, report_id, found, originals, date, "RFC 5965")
    found = _dsn(msg, date)
    if found:
        return Report(ReportKind.DSN, report_id, found, originals, date, "RFC 3464")
    why = _auto_reply(msg)
    if why is not None:
        return Report(ReportKind.AUTO_REPLY, report_id, [], originals, date, why)
    found = _non_standard(msg, date)
    if found:
        return Report(ReportKind.BOUNCE, report_id, found, originals, date, "flufl.bounce")
    return Report(ReportKind.UNRECOGNISED, report_id, [], originals, date, None)


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    return str(value) if value is not None else ""


def _date(value: str) -> datetime | None:
    value = re.sub(r"\s*\([^()]*\)\s*$", "", value.strip())  # "+0000 (UTC)"
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _clean(text: str | None, limit: int = MAX_DIAGNOSTIC_CHARS) -> str | None:
    if not text:
        return None
    return " ".join(text.split())[:limit] or None


def _typed_value(value: str) -> str:
    """``rfc822; a@b`` -> ``a@b`` (RFC 3464 address-type; value); ``dns; host`` -> ``host``."""
    _, semi, rest = value.partition(";")
    text = (rest if semi else value).strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text


def _status_class(code: str | None) -> BounceType:
    if code is None:
        return BounceType.UNDETERMINED
    return BounceType.HARD if code.startswith("5") else BounceType.SOFT


def _leaves(msg: Message) -> Iterator[Message]:
    for part in msg.walk():
        if not part.is_multipart():
            yield part


def _field_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = part.get_payload(decode=True)
    if not isinstance(text, bytes):
        return []
    body = text.decode("utf-8", "replace").replace("\r\n", "\n")
    parser = HeaderParser()
    return [parser.parsestr(block.strip("\n") + "\n") for block in re.split(r"\n\s*\n", body)
            if block.strip()]  # fmt: skip


def _dsn(msg: Message, date: datetime | None) -> list[FoundRecipient]:
    found: list[FoundRecipient] = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = _field_blocks(part)
        if not blocks:
            continue
        per_message, recipients = blocks[0], blocks[1:]
        reporter = _typed_value(_header(per_message, "Reporting-MTA")) or None
        arrival = _date(_header(per_message, "Arrival-Date"))
        for block in recipients:
            record = _dsn_recipient(block, reporter, date or arrival)
            if record is not None:
                found.append(record)
            if len(found) >= MAX_RECIPIENTS:
                return found
    return found


def _dsn_recipient(
    block: Message, reporter: str | None, fallback: datetime | None
) -> FoundRecipient | None:
    recipient = _typed_value(_header(block, "Original-Recipient")) or _typed_value(
        _header(block, "Final-Recipient")
    )
    if not recipient:
        return None
    action = _header(block, "Action").strip().lower().split(" ")[0].split("(")[0]
    match = _STATUS.search(_header(block, "Status"))
    code = match.group(0) if match else None
    diagnostic = _clean(_typed_value(_header(block, "Diagnostic-Code")))
    at = _date(_header(block, "Last-Attempt-Date")) or fallback
    base = FoundRecipient(FeedbackKind.BOUNCE, recipient, status_code=code,
                          diagnostic=diagnostic, occurred_at=at, reporter=reporter)  # fmt: skip
    if action == "delayed":
        return replace(base, kind=FeedbackKind.DELAY)
    if action == "delivered":
        return replace(base, kind=FeedbackKind.DELIVERY)
    if action in ("relayed", "expanded"):
        return None  # no news about delivery
    if action in ("failed", "error") or (code is not None and code[0] in "45"):
        return replace(base, bounce_type=_status_class(code))  # "error": opensmtpd's word
    return None


def _arf(msg: Message, date: datetime | None) -> list[FoundRecipient]:
    for part in msg.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        fields = Message()
        for block in _field_blocks(part):
            for name, value in block.items():
                fields[name] = value
        feedback_type = _header(fields, "Feedback-Type").strip().lower()
        if not feedback_type or feedback_type == "not-spam":
            return []  # not a complaint (RFC 6430 not-spam: the user says it is wanted)
        reporter = (
            _typed_value(_header(fields, "Reporting-MTA"))
            or _header(fields, "User-Agent").strip()
            or parseaddr(_header(msg, "From"))[1].rpartition("@")[2]
            or None
        )
        at = _date(_header(fields, "Arrival-Date")) or _date(_header(fields, "Received-Date"))
        recipients = [addr for _, addr in getaddresses(fields.get_all("Original-Rcpt-To") or [])
                      if addr]  # fmt: skip
        base = FoundRecipient(FeedbackKind.COMPLAINT, "", feedback_type=feedback_type[:64],
                              reporter=reporter, occurred_at=at or date)  # fmt: skip
        # Mailbox providers often redact the recipient: "" then (the email's own one).
        return [replace(base, recipient=r) for r in recipients[:MAX_RECIPIENTS]] or [base]
    return []


def _auto_reply(msg: Message) -> str | None:
    """Why ``msg`` is an auto-reply (RFC 3834, vacation), or None if it is not one."""
    sender = parseaddr(_header(msg, "From"))[1]
    if msg.get("X-Failed-Recipients") is not None or _DAEMON.match(sender):
        return None  # an MTA's bounce, which also says Auto-Submitted: auto-replied
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response"):
        if msg.get(name) is not None:
            return f"{name} header"
    precedence = _header(msg, "Precedence").strip().lower()
    if precedence == "auto_reply":
        return "Precedence: auto_reply"
    auto = _header(msg, "Auto-Submitted").strip().lower()
    if auto.startswith("auto-replied"):
        return "Auto-Submitted: auto-replied (RFC 3834)"
    subject = _header(msg, "Subject")
    if (precedence in ("bulk", "junk", "list") or auto.startswith("auto-")) and _VACATION.search(
        subject
    ):
        return f"vacation subject with Precedence: {precedence or auto}"
    if _VACATION.search(subject) and not re.search(
        r"undeliver|delivery|failure|returned|bounce", subject, re.IGNORECASE
    ):
        return "vacation subject"
    return None


def _non_standard(msg: Message, date: datetime | None) -> list[FoundRecipient]:
    if not getaddresses([_header(msg, "From")]):
        return []  # every MTA's bounce has a sender; flufl's Yale detector trips without one
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # a detector tripped over malformed input (flufl logs which)
        log.info("flufl.bounce could not read a message: %s", _clean(repr(exc), 200))
        return []
    if not temporary and not permanent:
        return []
    text = "\n".join(_texts(msg))
    found: list[FoundRecipient] = []
    for raw_address, hard in [*((a, True) for a in sorted(permanent)),
                              *((a, False) for a in sorted(temporary - permanent))]:  # fmt: skip
        address = raw_address.decode("ascii", "replace")
        diagnostic, code = _reply_near(text, address)
        if hard:
            bounce = _status_class(code) if code else BounceType.HARD
            found.append(FoundRecipient(
                FeedbackKind.BOUNCE, address, bounce_type=bounce, status_code=code,
                diagnostic=diagnostic, occurred_at=date,
            ))  # fmt: skip
        else:  # flufl's temporary set comes from warnings: delivery is still being tried
            found.append(FoundRecipient(
                FeedbackKind.DELAY, address, status_code=code, diagnostic=diagnostic,
                occurred_at=date,
            ))  # fmt: skip
        if len(found) >= MAX_RECIPIENTS:
            break
    return found


def _texts(msg: Message) -> Iterator[str]:
    for part in _leaves(msg):
        if part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            yield _decode(payload, part.get_content_charset())


def _decode(payload: bytes, charset: str | None) -> str:
    """Text in its declared charset; an unknown or broken one is read as UTF-8."""
    try:
        return payload.decode(charset or "utf-8", "replace")
    except (LookupError, ValueError):  # "s-ascii", "utf\x00-8"...: anything can be declared
        return payload.decode("utf-8", "replace")


def _reply_near(text: str, address: str) -> tuple[str | None, str | None]:
    """The SMTP reply in the few lines after a mention of ``address``, and its status code."""
    lines = text.splitlines()
    lowered = address.lower()
    for i, line in enumerate(lines):
        if lowered not in line.lower():
            continue
        for candidate in lines[i : i + 6]:
            match = _SMTP_REPLY.search(candidate)
            if match is not None:
                diagnostic = _clean(candidate[match.start() :])
                code = match.group(2) or None
                return diagnostic, code
    return None, None


def _original_event_ids(msg: Message) -> Iterator[str]:
    """eventIds named by the message(s) attached to a report (never by its own headers)."""
    for part in _attached_originals(msg):
        for name, pattern in ((EVENT_ID_HEADER, None), ("Message-ID", _MESSAGE_ID_LINE)):
            for value in part.get_all(name) or []:
                text = str(value).strip()
                if pattern is not None:
                    match = _MESSAGE_ID_LINE.match(f"Message-ID: {text}")
                    text = match.group(1) if match else ""
                if EVENT_ID_PATTERN.fullmatch(text):
                    yield text
    # Non-standard bounces quote the original as text: look for our header lines in it.
    if msg.get_content_type() not in ("multipart/report",):
        for text in _texts(msg):
            for match in _EVENT_ID_LINE.finditer(text):
                if EVENT_ID_PATTERN.fullmatch(match.group(1)):
                    yield match.group(1)


def _attached_originals(msg: Message) -> Iterable[Message]:
    for part in msg.walk():
        if part is msg:
            continue
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list):
                yield from (p for p in payload if isinstance(p, Message))
        elif ctype == "text/rfc822-headers":
            body = part.get_payload(decode=True)
            if isinstance(body, bytes):
                yield HeaderParser().parsestr(body.decode("utf-8", "replace"))


# -- to Feedback ----------------------------------------------------------------------------


class Mismatch(ValueError):
    """The report's original names another email than its return path: not applied."""


def feedback_records(
    report: Report, verified: VerpAddress, received_at: datetime
) -> list[Feedback]:
    """The Feedback records of ``report``, sent to the return path ``verified``.

    Raises Mismatch when the attached original names other emails than the
    address (a direct address), or none that the address was made for (a
    digest address, which needs the original to name its eventId).
    """
    named = report.original_event_ids
    if verified.event_id is not None:
        event_id = verified.event_id
        if named and event_id not in named:
            raise Mismatch(
                f"the return path names {event_id!r}, the attached original {sorted(named)!r}"
            )
    else:
        matching = [e for e in sorted(named) if VerpCodec.matches(verified, e)]
        if not matching:
            raise Mismatch(
                "a digest return path, and no eventId of the attached original matches it"
                if named else "a digest return path, and no attached original names the email"
            )
        event_id = matching[0]
    source = "arf" if report.kind is ReportKind.ARF else "dsn"
    many = len(report.found) > 1
    records = []
    for found in report.found:
        source_id = f"{report.report_id}#{found.recipient.lower()}" if many else report.report_id
        records.append(
            Feedback(
                event_id=event_id,
                kind=found.kind,
                recipient=found.recipient,
                occurred_at=found.occurred_at or report.date or received_at,
                source=source,
                source_id=source_id,
                bounce_type=found.bounce_type,
                status_code=found.status_code,
                diagnostic=found.diagnostic,
                feedback_type=found.feedback_type,
                reporter=found.reporter,
            )
        )
    return records
