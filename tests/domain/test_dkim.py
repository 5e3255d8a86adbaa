"""DKIM signing of rendered messages (actors.domain.dkim), checked with dkimpy's verifier.

Every signature here is verified the way a receiver would: dkimpy's ``verify`` against the
TXT record ``supervisor.py dkim show`` prints (tests/support/dkim.py answers the DNS query).
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from actors.domain.dkim import (
    Algorithm,
    DkimKey,
    DkimSigner,
    dns_txt_record,
    generate_private_key,
    load_private_key,
    private_key_pem,
    txt_strings,
)
from actors.domain.edges import OutgoingEmail
from actors.domain.mime import build_message, final_bytes, render_bytes
from tests.support.dkim import assert_wire_safe, key_for, signature_tags, verifies
from tests.support.emails import outgoing_email

ALGORITHMS: list[Algorithm] = ["rsa-sha256", "ed25519-sha256"]
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40


def rich_email(domain: str = "example.com", **changes: Any) -> OutgoingEmail:
    """Non-ASCII subject and display names (RFC 2047), HTML, two attachments."""
    base: dict[str, Any] = {
        "sender": f"Zoë Ådahl-Østergård <noreply@{domain}>",
        "recipient": "Ana Lúcia <ana@example.org>",
        "subject": "Grüße aus Köln — your receipt №42 is ready ✓",
        "text": "Hallo Anaïs,\n\nyour receipt is attached.\n",
        "html": "<p>Hallo <b>Anaïs</b>, your receipt is attached.</p>",
        "attachments": [
            ("Quittung-Köln.pdf", "application/pdf", PDF),
            ("notes.txt", "text/plain", "ünïcode notes\n".encode() * 20),
        ],
    }
    return outgoing_email(1, domain=domain, **(base | changes))


def signed(email: OutgoingEmail, *keys: DkimKey, eight_bit: bool = True, **kw: Any) -> bytes:
    signer = DkimSigner({k.domain: k for k in keys}, **kw)
    return final_bytes(build_message(email), eight_bit=eight_bit, sign=signer.sign)


# -- signatures that verify -------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("eight_bit", [True, False])
def test_a_signed_message_verifies(algorithm: Algorithm, eight_bit: bool) -> None:
    key = key_for("example.com", algorithm)
    data = signed(rich_email(), key, eight_bit=eight_bit)
    assert data.startswith(b"DKIM-Signature: ")
    assert verifies(data, key)
    tags = signature_tags(data)
    assert tags["a"] == algorithm and tags["c"] == "relaxed/relaxed"
    assert (tags["d"], tags["s"]) == ("example.com", "s1")
    signed_names = tags["h"].split(":")
    for name in ("from", "to", "subject", "date", "message-id", "mime-version", "content-type"):
        assert name in signed_names
    assert signed_names.count("from") == 2  # oversigned: a second From breaks it
    assert_wire_safe(data)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_what_is_signed_when_present(algorithm: Algorithm) -> None:
    key = key_for("example.com", algorithm)
    headers = {
        "Reply-To": "Support <help@example.com>",
        "List-Unsubscribe": "<https://example.com/u/42>, <mailto:u+42@example.com>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "X-Campaign": "not signed",
    }
    data = signed(rich_email(headers=headers, attachments=[], html=None), key)
    assert verifies(data, key)
    names = signature_tags(data)["h"].split(":")
    for name in ("reply-to", "list-unsubscribe", "list-unsubscribe-post"):
        assert names.count(name) == 2  # present, and once more
    assert names.count("content-transfer-encoding") == 1
    assert "x-campaign" not in names and "x-mailactors-event-id" not in names


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_tampered_message_fails(algorithm: Algorithm) -> None:
    key = key_for("example.com", algorithm)
    data = signed(rich_email(), key)
    assert verifies(data, key)
    head, _, body = data.partition(b"\r\n\r\n")
    tampering = {
        "body": head + b"\r\n\r\n" + body.replace(b"receipt", b"invoice", 1),
        "subject": data.replace(b"Subject: =?utf-8?b?", b"Subject: =?utf-8?B?X", 1),
        "second From": data.replace(
            b"\r\nTo: ", b"\r\nFrom: ceo@example.com\r\nTo: ", 1
        ),
        "added Reply-To": data.replace(b"\r\nTo: ", b"\r\nReply-To: evil@example.net\r\nTo: ", 1),
        "attachment": data.replace(base64.b64encode(PDF[:57]), base64.b64encode(b"X" + PDF[1:57])),
    }
    for what, changed in tampering.items():
        assert changed != data, what
        assert not verifies(changed, key), f"{what}: still verifies"
    # A different key published under the selector: fails too.
    assert not verifies(data, key_for("example.com", algorithm, n=1))


def test_relaxed_canonicalisation_survives_refolding_and_trailing_space() -> None:
    key = key_for("example.com")
    data = signed(rich_email(attachments=[], html=None), key)
    # What relays may do to a message without breaking a relaxed/relaxed signature.
    refolded = data.replace(b"\r\nTo: ", b"\r\nTo:   ", 1)
    refolded = refolded.replace(b"attached.\r\n", b"attached. \r\n")
    assert refolded != data and verifies(refolded, key)


def test_long_header_values_long_body_lines_and_attachments_stay_within_998_octets() -> None:
    key = key_for("example.com")
    email = rich_email(
        subject="Grüße " * 120,  # encoded words, folded
        headers={
            "X-Plain-Long": "word " * 400,  # ASCII, folded at spaces
            "X-Unbreakable": "x" * 3000,  # one token: the email package encodes it
            "List-Unsubscribe": "<https://example.com/unsubscribe/" + "a" * 1200 + ">",
            "References": " ".join(f"<id{i}@example.com>" for i in range(200)),
        },
        text="a line of text " * 200 + "\n" + "y" * 5000 + "\n\nend\n",  # quoted-printable
        html="<p>" + "z" * 4000 + "</p>",
    )
    for eight_bit in (True, False):
        data = signed(email, key, eight_bit=eight_bit)
        assert_wire_safe(data)
        assert verifies(data, key)


def test_a_line_the_signature_would_not_survive_is_refused() -> None:
    key = key_for("example.com")
    signer = DkimSigner({"example.com": key})
    good = render_bytes(build_message(rich_email()))
    # Rendering never writes a line over 998 octets (a long display name is split: see
    # tests/domain/test_display_name_length.py); given one, signing refuses rather than send
    # a signature a relay would break.
    data = good.replace(b"\r\n", b"\r\nX-Long: " + b"a" * 1000 + b"\r\n", 1)
    with pytest.raises(ValueError, match="line over 998 octets"):
        signer.sign(data)
    with pytest.raises(ValueError, match="bare CR or LF"):
        signer.sign(good.replace(b"\r\n\r\n", b"\r\n\r\nbare\nline\r\n", 1))
    with pytest.raises(ValueError, match="bare CR or LF"):
        signer.sign(good.replace(b"\r\n", b"\n"))
    assert signer.statistics().signed == 0


def test_an_smtputf8_message_verifies() -> None:
    key = key_for("example.com")
    data = signed(rich_email(recipient="zoë@exämple.org"), key)
    assert "zoë@exämple.org".encode() in data
    assert verifies(data, key)


# -- which key, and without one ---------------------------------------------------------


def test_the_from_domain_chooses_the_key() -> None:
    rsa, ed = key_for("example.com"), key_for("mail.example.net", "ed25519-sha256")
    signer = DkimSigner({k.domain: k for k in (rsa, ed)})
    for key in (rsa, ed):
        data = signer.sign(render_bytes(build_message(rich_email(key.domain.upper()))))
        assert signature_tags(data)["d"] == key.domain and verifies(data, key)
    assert signer.statistics().signed == 2


def test_a_domain_without_a_key_is_sent_unsigned_or_refused() -> None:
    key = key_for("example.com")
    data = render_bytes(build_message(rich_email("other.example")))
    signer = DkimSigner({"example.com": key})
    assert signer.sign(data) is data
    assert (signer.statistics().signed, signer.statistics().unsigned) == (0, 1)
    strict = DkimSigner({"example.com": key}, require=True)
    with pytest.raises(ValueError, match=r"no key for the From domain 'other\.example'"):
        strict.sign(data)


def test_without_leaves_rewritten_headers_unsigned() -> None:
    # SES replaces Message-ID and Date: a signature without them survives the rewrite.
    key = key_for("example.com")
    signer = DkimSigner({"example.com": key}).without(["Message-ID", "Date"])
    data = signer.sign(render_bytes(build_message(rich_email())))
    names = signature_tags(data)["h"].split(":")
    assert "message-id" not in names and "date" not in names
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = [
        b"Message-ID: <0100018c@email.amazonses.com>"
        if line.startswith(b"Message-ID:")
        else b"Date: Wed, 02 Dec 2026 10:00:00 +0000"
        if line.startswith(b"Date:")
        else line
        for line in head.split(b"\r\n")
    ]
    rewritten = b"\r\n".join(lines) + sep + body
    assert rewritten != data and verifies(rewritten, key)


# -- keys and DNS records ------------------------------------------------------------------


def test_keys_load_from_pkcs1_pkcs8_and_an_ed25519_seed() -> None:
    rsa = key_for("example.com").private_key
    pkcs1 = rsa.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY")
    for pem in (pkcs1, private_key_pem(rsa), private_key_pem(rsa).decode()):
        assert load_private_key(pem, "rsa-sha256").private_numbers() == rsa.private_numbers()  # type: ignore[union-attr]
    ed = key_for("example.com", "ed25519-sha256").private_key
    seed = ed.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    for text in (private_key_pem(ed), base64.b64encode(seed) + b"\n"):
        loaded = load_private_key(text, "ed25519-sha256")
        assert loaded.private_bytes(  # type: ignore[call-arg]
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        ) == seed


def test_bad_keys_are_refused_with_the_reason_and_never_the_key() -> None:
    rsa_pem = private_key_pem(key_for("example.com").private_key)
    ed_pem = private_key_pem(key_for("example.com", "ed25519-sha256").private_key)
    encrypted = key_for("example.com").private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    cases: list[tuple[bytes, Algorithm, str]] = [
        (rsa_pem, "ed25519-sha256", "key/algorithm mismatch: an RSA key"),
        (ed_pem, "rsa-sha256", "key/algorithm mismatch: an Ed25519 key"),
        (b"not a key at all", "rsa-sha256", "not a private key"),
        (rsa_pem[:200] + rsa_pem[-30:], "rsa-sha256", "not a readable PEM private key"),
        (encrypted, "rsa-sha256", "encrypted with a passphrase"),
        (base64.b64encode(b"x" * 31), "ed25519-sha256", "not a private key"),
    ]
    for data, algorithm, reason in cases:
        with pytest.raises(ValueError, match=reason) as caught:
            load_private_key(data, algorithm)
        message = str(caught.value)
        assert "\n" not in message and "MII" not in message and len(message) < 200


def test_the_dns_record_is_what_the_verifier_reads_and_fits_txt_strings() -> None:
    rsa = key_for("example.com", selector="mail2026")
    name, value = dns_txt_record(rsa)
    assert name == "mail2026._domainkey.example.com"
    assert value.startswith("v=DKIM1; k=rsa; p=MII")
    strings = txt_strings(value)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == value
    ed_name, ed_value = dns_txt_record(key_for("example.com", "ed25519-sha256"))
    assert ed_value.startswith("v=DKIM1; k=ed25519; p=") and len(txt_strings(ed_value)) == 1
    assert len(base64.b64decode(ed_value.rpartition("p=")[2])) == 32  # RFC 8463: the raw key


def test_key_generation_and_key_checks() -> None:
    assert generate_private_key("rsa-sha256").key_size == 2048  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="too weak"):
        generate_private_key("rsa-sha256", bits=1024)
    ed = key_for("example.com", "ed25519-sha256").private_key
    with pytest.raises(ValueError, match="mismatch"):
        DkimKey("example.com", "s1", "rsa-sha256", ed)
    with pytest.raises(ValueError, match="selector"):
        DkimKey("example.com", "bad selector", "ed25519-sha256", ed)
    with pytest.raises(ValueError, match="domain"):
        DkimKey("Example.com", "s1", "ed25519-sha256", ed)
    assert "PRIVATE" not in repr(DkimKey("example.com", "s1", "ed25519-sha256", ed))


# -- cost -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_signing_cost_per_email(algorithm: Algorithm, capsys: pytest.CaptureFixture[str]) -> None:
    """Printed (pytest -s), not asserted: the figure the README quotes."""
    key = key_for("example.com", algorithm)
    signer = DkimSigner({"example.com": key})
    code = outgoing_email(1, text="Hello Ada,\n\nyour code is 493817.\n")
    small = render_bytes(build_message(code))
    large = render_bytes(build_message(rich_email()))
    figures = []
    for label, data in (("1 KB", small), (f"{len(large) // 1024} KB", large)):
        n = 300
        start = time.process_time()
        for _ in range(n):
            signer.sign(data)
        figures.append(f"{label}: {(time.process_time() - start) / n * 1e3:.3f} ms")
    assert verifies(signer.sign(small), key)
    with capsys.disabled():
        print(f"\nDKIM {algorithm} CPU per email: " + ", ".join(figures))
