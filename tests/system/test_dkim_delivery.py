"""DKIM through the whole system: a request to the gRPC API of a running embedded system is
delivered to an SMTP server (aiosmtpd) or SES (moto) signed with the From domain's key, and
the delivered bytes verify.

Keys come from files named in ``[dkim]`` (an ed25519 key from an environment variable in the
process test), exactly as an operator configures them; the verifier is dkimpy's, against the
TXT record ``supervisor.py dkim show`` prints for the same profile.
"""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from actors.domain.dkim import Algorithm, DkimKey, private_key_pem
from actors.domain.schema import Status
from actors.grpc.convert import variables_to_struct
from actors.profiles.embedded import open_embedded
from config import ConfigError
from protos import email_pb2
from tests.support.dkim import assert_wire_safe, key_for, signature_tags, verifies, write_key
from tests.support.embedded import embedded_config, grpc_request_email
from tests.support.embedded_process import SUPERVISOR, embedded_env
from tests.support.ses_servers import MotoSes
from tests.support.smtp_servers import CapturingServer

DOMAIN = "mailactors.test"  # the sender of embedded_config: noreply@mailactors.test
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 64


def dkim_section(tmp_path: Path, key: DkimKey) -> dict[str, Any]:
    entry = {"selector": key.selector, "algorithm": key.algorithm}
    entry["key_file"] = str(write_key(tmp_path, key))
    return {"domains": {key.domain: entry}}


def welcome(name: str, product: str, attachments: bool) -> Any:
    return email_pb2.RequestEmailRequest(
        recipient="zoe@example.org" if attachments else "ada@example.com",
        template="welcome",
        variables=variables_to_struct({"name": name, "product": product}),
        attachments=[
            email_pb2.Attachment(
                filename="Quittung Köln №42.pdf", content_type="application/pdf", content=PDF
            ),
            email_pb2.Attachment(
                filename="notes.txt", content_type="text/plain", content="ünï\n".encode() * 300
            ),
        ]
        if attachments
        else [],
    )


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
async def test_delivered_bytes_verify(tmp_path: Path, algorithm: Algorithm) -> None:
    key = key_for(DOMAIN, algorithm, selector="mail2026")
    with CapturingServer() as server:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": server.port}},
            dkim=dkim_section(tmp_path, key),
        )
        async with open_embedded(config, grpc=True, shutdown=10.0) as app:
            requests = [
                welcome("Ada", "Acme", attachments=False),
                welcome("Zoë Ådahl-Østergård", "Grüße aus Köln ✓ " * 6, attachments=True),
            ]
            replies = [await grpc_request_email(app, r) for r in requests]
            docs = [await app.wait_terminal(r.event_id) for r in replies]
        received = {m.event_id: m for m in server.messages()}
    assert [d.status for d in docs] == [Status.SENT, Status.SENT], [d.error for d in docs]
    assert set(received) == {r.event_id for r in replies}
    for reply in replies:
        data = received[reply.event_id].data
        assert_wire_safe(data)
        assert verifies(data, key), reply.event_id
        tags = signature_tags(data)
        assert (tags["d"], tags["s"], tags["a"]) == (DOMAIN, "mail2026", algorithm)
        # A tampered copy does not verify.
        assert not verifies(data.replace(b"Welcome", b"Wellcome", 1), key)
    rich = email.message_from_bytes(received[replies[1].event_id].data, policy=email.policy.default)
    assert rich["Subject"].startswith("Welcome to Grüße aus Köln ✓")
    assert [p.get_filename() for p in rich.iter_attachments()] == [
        "Quittung Köln №42.pdf",
        "notes.txt",
    ]


async def test_ses_through_the_embedded_system_verifies(tmp_path: Path, moto_ses: MotoSes) -> None:
    key = key_for(DOMAIN, "ed25519-sha256", selector="ses1")
    moto_ses.verify(f"noreply@{DOMAIN}", "eu-west-1")
    config = embedded_config(
        tmp_path,
        provider={"kind": "ses", "ses": {"region": "eu-west-1", "endpoint_url": moto_ses.url}},
        dkim=dkim_section(tmp_path, key),
    )
    async with open_embedded(config, grpc=True, shutdown=10.0) as app:
        reply = await grpc_request_email(app, welcome("Zoë", "Köln ✓", attachments=True))
        doc = await app.wait_terminal(reply.event_id)
    assert doc.status is Status.SENT and doc.provider == "ses", doc.error
    [sent] = moto_ses.sent("eu-west-1")
    assert_wire_safe(sent.data)
    assert verifies(sent.data, key)
    tags = signature_tags(sent.data)
    assert tags["d"] == DOMAIN and "message-id" not in tags["h"].split(":")


async def test_a_bad_key_stops_start_up_with_one_line(tmp_path: Path) -> None:
    ed = key_for(DOMAIN, "ed25519-sha256")
    section = dkim_section(tmp_path, ed)
    section["domains"][DOMAIN]["algorithm"] = "rsa-sha256"  # the file holds an Ed25519 key
    config = embedded_config(tmp_path, dkim=section)
    with pytest.raises(ConfigError) as caught:
        async with open_embedded(config, grpc=False, shutdown=10.0):
            pytest.fail("started with a key that does not match its algorithm")
    assert str(caught.value) == (
        f'dkim.domains."{DOMAIN}".key_file: key/algorithm mismatch: an Ed25519 key, '
        "but algorithm is 'rsa-sha256'"
    )


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, SUPERVISOR, "--profile", "embedded", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_the_commands_keygen_show_and_a_bad_key_at_up(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    key_file = tmp_path / "keys" / "mailactors.test.key"
    made = run_cli(
        env, "dkim", "keygen", DOMAIN, "--selector", "sel1", "--out", str(key_file), "--json"
    )
    assert made.returncode == 0, made.stderr
    assert key_file.stat().st_mode & 0o777 == 0o600
    printed = json.loads(made.stdout)
    again = run_cli(env, "dkim", "keygen", DOMAIN, "--selector", "x", "--out", str(key_file))
    assert again.returncode == 1 and "exists; not overwritten" in again.stderr

    ed = key_for(DOMAIN, "ed25519-sha256")
    env |= {
        "MAILACTORS__DKIM__DOMAINS": json.dumps(
            {
                DOMAIN: {"selector": "sel1", "key_file": str(key_file)},
                "ed.mailactors.test": {
                    "selector": "e1",
                    "algorithm": "ed25519-sha256",
                    "key_env": "DKIM_ED_KEY",
                },
            }
        ),
        "DKIM_ED_KEY": private_key_pem(ed.private_key).decode(),
    }
    shown = run_cli(env, "dkim", "show", DOMAIN, "--json")
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record == printed
    assert record["name"] == f"sel1._domainkey.{DOMAIN}" and record["type"] == "TXT"
    assert record["value"].startswith("v=DKIM1; k=rsa; p=MII")
    assert len(record["strings"]) == 2 and all(len(s) <= 255 for s in record["strings"])
    zone = run_cli(env, "dkim", "show", DOMAIN)
    assert f'sel1._domainkey.{DOMAIN}. IN TXT ( "v=DKIM1; k=rsa; p=' in zone.stdout
    assert "PRIVATE" not in made.stdout + shown.stdout + zone.stdout

    ed_shown = run_cli(env, "dkim", "show", "ed.mailactors.test", "--json")
    assert json.loads(ed_shown.stdout)["value"] == f"v=DKIM1; k=ed25519; p={ed.public_key_b64()}"

    missing = run_cli(env, "dkim", "show", "other.example")
    assert missing.returncode == 1 and "no [dkim.domains.\"other.example\"]" in missing.stderr

    env["DKIM_ED_KEY"] = "garbage"
    bad = run_cli(env, "up")
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith(
        'configuration error: dkim.domains."ed.mailactors.test".key_env: not a private key: '
        "expected PEM (-----BEGIN ... PRIVATE KEY-----) or, for ed25519, the base64 of a "
        "32-byte seed"
    )
    assert len(bad.stderr.strip().splitlines()) == 1
