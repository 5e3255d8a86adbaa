"""Reading DSNs, ARF reports, non-standard bounces and auto-replies from the samples."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.feedback import (
    BounceType,
    FeedbackKind,
    Mismatch,
    ReportKind,
    ReportRefused,
    VerpCodec,
    feedback_records,
    parse_report,
)
from tests.support.feedback import SAMPLES, sample

codec = VerpCodec("s" * 32, "bounce.mailactors.test")
EVENT_ID = "6f0e2a7c-58b4-4f0b-9a51-3e1c2d4b5a60"
VERP = codec.address(EVENT_ID)
NOW = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)

H, S = BounceType.HARD, BounceType.SOFT
B, D, C = FeedbackKind.BOUNCE, FeedbackKind.DELAY, FeedbackKind.COMPLAINT

# sample -> (report kind, [(feedback kind, recipient, bounce type, status code)])
EXPECTED = {
    "postfix_hard": (ReportKind.DSN, [(B, "nobody@example.net", H, "5.1.1")]),
    "postfix_delayed": (ReportKind.DSN, [(D, "slow@example.org", None, "4.4.1")]),
    "exim_hard": (ReportKind.BOUNCE, [(B, "gone@example.com", H, "5.1.1")]),
    "exchange_hard": (ReportKind.DSN, [(B, "missing@contoso.example", H, "5.1.10")]),
    "exchange2003_hard": (ReportKind.BOUNCE, [(B, "former@fabrikam.example", H, "5.1.1")]),
    "gmail_hard": (ReportKind.DSN, [(B, "no.such.user@gmail.com", H, "5.1.1")]),
    "gmail_soft": (ReportKind.DSN, [(B, "full.box@gmail.com", S, "4.2.2")]),
    "yahoo_hard": (ReportKind.BOUNCE, [(B, "closed.account@yahoo.com", H, None)]),
    "arf_yahoo": (ReportKind.ARF, [(C, "reader@yahoo.example", None, None)]),
    "autoreply_rfc3834": (ReportKind.AUTO_REPLY, []),
    "vacation": (ReportKind.AUTO_REPLY, []),
}


def test_every_sample_is_expected() -> None:
    assert set(EXPECTED) == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_reads_as_expected(name: str) -> None:
    kind, expected = EXPECTED[name]
    report = parse_report(sample(name, EVENT_ID, VERP))
    assert report.kind is kind, report.detector
    got = [(f.kind, f.recipient, f.bounce_type, f.status_code) for f in report.found]
    assert got == expected
    if kind in (ReportKind.AUTO_REPLY,):
        return
    assert report.original_event_ids == {EVENT_ID}
    records = feedback_records(report, codec.verify(VERP), NOW)  # type: ignore[arg-type]
    assert [r.event_id for r in records] == [EVENT_ID] * len(expected)
    for record in records:
        assert record.source == ("arf" if kind is ReportKind.ARF else "dsn")
        assert record.source_id == report.report_id
        assert record.occurred_at != NOW  # the report's own time, not the arrival
        if record.kind is B and name != "yahoo_hard":
            assert record.diagnostic and record.status_code in record.diagnostic


def test_details_of_a_dsn_and_a_complaint() -> None:
    postfix = parse_report(sample("postfix_hard", EVENT_ID, VERP))
    (found,) = postfix.found
    assert found.reporter == "mx.example.net"
    assert found.occurred_at == datetime(2026, 12, 1, 10, 0, 4, tzinfo=UTC)
    assert "User unknown in virtual mailbox table" in (found.diagnostic or "")
    assert postfix.report_id == "<20261201100004.4Bc2Xk0Yz1@mx.example.net>"
    (complaint,) = parse_report(sample("arf_yahoo", EVENT_ID, VERP)).found
    assert complaint.feedback_type == "abuse"
    assert complaint.reporter == "mail.yahoo.example"


def test_a_complaint_with_the_recipient_redacted_names_no_recipient() -> None:
    raw = sample("arf_yahoo", EVENT_ID, VERP).replace(
        b"Original-Rcpt-To: <reader@yahoo.example>\n", b""
    )
    (found,) = parse_report(raw).found
    assert (found.kind, found.recipient, found.feedback_type) == (C, "", "abuse")


def test_not_spam_is_not_a_complaint() -> None:
    raw = sample("arf_yahoo", EVENT_ID, VERP)
    raw = raw.replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    assert parse_report(raw).found == []


def test_an_mta_bounce_saying_auto_replied_is_still_a_bounce() -> None:
    # Postfix and Exim mark their bounces Auto-Submitted: auto-replied (RFC 3834 asks it).
    for name in ("postfix_hard", "exim_hard", "gmail_hard"):
        assert b"Auto-Submitted: auto-replied" in sample(name, EVENT_ID, VERP)
        assert parse_report(sample(name, EVENT_ID, VERP)).kind is not ReportKind.AUTO_REPLY


def test_auto_reply_headers_are_recognised() -> None:
    base = sample("vacation", EVENT_ID, VERP)
    plain = base.replace(b"Precedence: bulk\n", b"").replace(b"Out of Office: ", b"Re: ")
    assert parse_report(plain).kind is ReportKind.UNRECOGNISED
    for header in (b"X-Autoreply: yes\n", b"Precedence: auto_reply\n", b"X-Autorespond: 1\n",
                   b"Auto-Submitted: auto-replied (vacation)\n"):  # fmt: skip
        assert parse_report(header + plain).kind is ReportKind.AUTO_REPLY, header
    # Outlook's "Automatic reply:" subject alone.
    outlook = plain.replace(b"Subject: Re: ", b"Subject: Automatic reply: ")
    assert parse_report(outlook).kind is ReportKind.AUTO_REPLY


def test_a_report_naming_another_email_is_refused() -> None:
    report = parse_report(sample("gmail_hard", "someone-else-42", VERP))
    with pytest.raises(Mismatch, match="someone-else-42"):
        feedback_records(report, codec.verify(VERP), NOW)  # type: ignore[arg-type]


def test_a_report_without_the_original_trusts_the_return_path() -> None:
    raw = sample("postfix_hard", EVENT_ID, VERP)
    raw = raw[: raw.index(b"--4Bc2Xk0Yz1.1764583204/mx.example.net\nContent-Description: Undeliv")]
    report = parse_report(raw)
    assert report.kind is ReportKind.DSN and report.original_event_ids == frozenset()
    (record,) = feedback_records(report, codec.verify(VERP), NOW)  # type: ignore[arg-type]
    assert record.event_id == EVENT_ID and record.bounce_type is H


def test_a_digest_return_path_takes_the_event_id_from_the_original() -> None:
    long_id = "order:" + "X" * 100
    address = codec.address(long_id)
    verified = codec.verify(address)
    assert verified is not None and verified.event_id is None
    for name in ("postfix_hard", "exim_hard", "yahoo_hard", "arf_yahoo"):
        report = parse_report(sample(name, long_id, address))
        (record,) = feedback_records(report, verified, NOW)
        assert record.event_id == long_id
    other = parse_report(sample("postfix_hard", "order:" + "Y" * 100, address))
    with pytest.raises(Mismatch):
        feedback_records(other, verified, NOW)


def test_several_recipients_get_distinct_source_ids() -> None:
    raw = sample("postfix_hard", EVENT_ID, VERP).replace(
        b"Last-Attempt-Date: Tue,  1 Dec 2026 10:00:04 +0000 (UTC)\n",
        b"Last-Attempt-Date: Tue,  1 Dec 2026 10:00:04 +0000 (UTC)\n\n"
        b"Final-Recipient: rfc822; other@example.net\nAction: failed\nStatus: 4.2.2\n",
    )
    records = feedback_records(parse_report(raw), codec.verify(VERP), NOW)  # type: ignore[arg-type]
    assert [(r.recipient, r.bounce_type) for r in records] == [
        ("nobody@example.net", H), ("other@example.net", S)]  # fmt: skip
    assert len({r.source_id for r in records}) == 2


def test_malformed_reports_never_crash() -> None:
    junk = [
        b"",
        b"\x00\xff" * 100,
        b"Content-Type: multipart/report; report-type=delivery-status\n\nno boundary",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n"
        b"Content-Type: message/delivery-status\n\nReporting-MTA dns\n\nAction: failed\n--x--\n",
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=x\n\n--x\n"
        b"Content-Type: message/feedback-report\n\n\n--x--\n",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n"
        b"Content-Type: message/delivery-status\n\nX: y\n\nFinal-Recipient: rfc822; a@b\n"
        b"Action: failed\nStatus: 9.9.9\nLast-Attempt-Date: not a date\n--x--\n",
        b"Date: yesterday\nFrom: \xc3(\nSubject: =?utf-8?q?=FF?=\n\nbody",
    ]
    for raw in junk:
        report = parse_report(raw)
        assert report.kind in set(ReportKind)
    # A failed DSN without a valid Status is undetermined, not hard.
    (found,) = parse_report(junk[5]).found
    assert (found.recipient, found.bounce_type) == ("a@b", BounceType.UNDETERMINED)
    assert found.status_code is None


def test_enormous_structures_are_refused_unparsed() -> None:
    deep = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(100)
    )
    with pytest.raises(ReportRefused, match="multipart containers"):
        parse_report(deep)
    nested = b"Content-Type: message/rfc822\n\n" * 1000
    with pytest.raises(ReportRefused, match="containers"):
        parse_report(nested)
    wide = b"Content-Type: multipart/mixed; boundary=b\n\n" + b"--b\n\nx\n" * 1000 + b"--b--\n"
    with pytest.raises(ReportRefused, match="MIME parts"):
        parse_report(wide)
    # Within the bounds it parses.
    assert parse_report(wide, max_parts=2000).kind is ReportKind.UNRECOGNISED


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(EXPECTED)),
    st.lists(st.tuples(st.integers(0, 4000), st.binary(min_size=0, max_size=40)), max_size=6),
    st.integers(0, 4000),
)
def test_damaged_samples_never_crash_the_reader(
    name: str, edits: list[tuple[int, bytes]], cut: int
) -> None:
    raw = bytearray(sample(name, EVENT_ID, VERP))
    for at, junk in edits:  # overwrite bytes anywhere: headers, boundaries, fields
        at %= max(len(raw), 1)
        raw[at : at + len(junk)] = junk
    damaged = bytes(raw[: max(cut, 1) if cut < len(raw) else len(raw)])
    try:
        report = parse_report(damaged)
    except ReportRefused:
        return
    for found in report.found:
        assert found.kind in set(FeedbackKind)
    try:
        feedback_records(report, codec.verify(VERP), NOW)  # type: ignore[arg-type]
    except Mismatch:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_never_crash_the_reader(raw: bytes) -> None:
    try:
        parse_report(raw)
    except ReportRefused:
        pass


def test_a_dsn_wrapped_in_multipart_mixed_is_still_a_dsn() -> None:
    raw = sample("postfix_hard", EVENT_ID, VERP).replace(
        b"Content-Type: multipart/report; report-type=delivery-status;",
        b"Content-Type: multipart/mixed;",
    )
    report = parse_report(raw)
    assert report.kind is ReportKind.DSN
    assert [(f.recipient, f.bounce_type) for f in report.found] == [("nobody@example.net", H)]
