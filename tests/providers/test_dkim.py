"""Every provider signs what it sends (DKIM), and ``[dkim]`` is checked at start-up.

The bytes checked are those the transport received: an aiosmtpd server's DATA, moto's
SES v2 raw message, the Maildir file; each verified with dkimpy against the TXT record an
operator would publish (tests/support/dkim.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.domain.dkim import Algorithm, DkimSigner, private_key_pem
from actors.domain.edges import Failure, OutgoingEmail
from actors.providers.build import make_provider, make_signer
from actors.providers.maildir import MaildirProvider
from actors.providers.ses import SesProvider
from actors.providers.smtp import SmtpProvider
from config import ConfigError, DkimConfig, load_config
from runtime import AsyncioEdge
from tests.support.dkim import assert_wire_safe, key_for, signature_tags, verifies, write_key
from tests.support.emails import outgoing_email
from tests.support.ses_servers import MotoSes
from tests.support.smtp_servers import CapturingServer

ALGORITHMS: list[Algorithm] = ["rsa-sha256", "ed25519-sha256"]
REGION = "eu-west-1"


def email(i: int = 1, domain: str = "example.com", **changes: Any) -> OutgoingEmail:
    base: dict[str, Any] = {
        "sender": f"Zoë Ådahl <noreply@{domain}>",
        "subject": f"Grüße, Anaïs ({i})",
        "text": "Hallo Anaïs,\n\n" + "your receipt is attached. " * 60 + "\n",
        "html": "<p>Hallo <b>Anaïs</b></p>",
        "attachments": [("Quittung.pdf", "application/pdf", b"%PDF-1.4 \x00\xff" * 500)],
    }
    return outgoing_email(i, domain=domain, **(base | changes))


def signer_for(*algorithms: Algorithm, require: bool = False) -> DkimSigner:
    keys = [key_for(f"{a.partition('-')[0]}.example.com", a) for a in algorithms]
    return DkimSigner({k.domain: k for k in keys}, require=require)


# -- providers ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_smtp_delivers_signed_bytes(algorithm: Algorithm, edge: AsyncioEdge) -> None:
    key = key_for(f"{algorithm.partition('-')[0]}.example.com", algorithm)
    signer = signer_for(*ALGORITHMS)
    async with CapturingServer() as server:
        provider = SmtpProvider("127.0.0.1", server.port, pool_size=1, signer=signer)
        await provider.open()
        try:
            result = await provider.send(email(domain=key.domain))
        finally:
            await provider.close()
        [received] = server.messages()
    assert result.ok, result.reply
    assert_wire_safe(received.data)
    assert verifies(received.data, key)
    assert signature_tags(received.data)["d"] == key.domain
    assert signer.statistics().signed == 1


async def test_smtp_refuses_what_it_must_sign_but_cannot(edge: AsyncioEdge) -> None:
    signer = signer_for("rsa-sha256", require=True)
    async with CapturingServer() as server:
        provider = SmtpProvider("127.0.0.1", server.port, pool_size=1, signer=signer)
        await provider.open()
        try:
            unknown = await provider.send(email(domain="unsigned.example"))
            # Once a line over 998 octets (refused); now split into encoded words, signed.
            long_name = await provider.send(
                email(domain="rsa.example.com", sender="Zoë " * 300 + "<noreply@rsa.example.com>")
            )
            fine = await provider.send(email(domain="rsa.example.com"))
        finally:
            await provider.close()
        received = server.messages()
    assert unknown.failure is Failure.PERMANENT and not unknown.ok
    assert unknown.reply and "no key for the From domain 'unsigned.example'" in unknown.reply
    assert long_name.ok, long_name.reply
    assert fine.ok and len(received) == 2  # the unsigned one never reached the server
    for message in received:
        assert max(map(len, message.data.split(b"\r\n"))) <= 998
        assert verifies(message.data, key_for("rsa.example.com"))


async def test_an_unsigned_domain_is_sent_as_it_is(edge: AsyncioEdge) -> None:
    signer = signer_for("rsa-sha256")
    async with CapturingServer() as server:
        provider = SmtpProvider("127.0.0.1", server.port, pool_size=1, signer=signer)
        await provider.open()
        try:
            result = await provider.send(email(domain="unsigned.example"))
        finally:
            await provider.close()
        [received] = server.messages()
    assert result.ok and b"DKIM-Signature" not in received.data
    assert (signer.statistics().signed, signer.statistics().unsigned) == (0, 1)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_ses_raw_message_is_signed_without_the_headers_ses_rewrites(
    algorithm: Algorithm, moto_ses: MotoSes, edge: AsyncioEdge
) -> None:
    key = key_for(f"{algorithm.partition('-')[0]}.example.com", algorithm)
    moto_ses.verify(f"noreply@{key.domain}", REGION)
    signer = signer_for(*ALGORITHMS)
    provider = SesProvider(REGION, endpoint_url=moto_ses.url, signer=signer)
    await provider.open()
    try:
        result = await provider.send(email(domain=key.domain))
    finally:
        await provider.close()
    assert result.ok, result.reply
    [sent] = moto_ses.sent(REGION)
    assert sent.data.isascii()  # 7-bit for SES, signed as such
    assert_wire_safe(sent.data)
    assert verifies(sent.data, key)
    names = signature_tags(sent.data)["h"].split(":")
    assert "message-id" not in names and "date" not in names and "from" in names
    assert signer.statistics().signed == 1  # the SES view counts in the shared signer


async def test_maildir_files_are_signed(tmp_path: Path) -> None:
    key = key_for("ed25519.example.com", "ed25519-sha256")
    provider = MaildirProvider(tmp_path / "md", signer=signer_for("ed25519-sha256"))
    await provider.open()
    try:
        result = await provider.send(email(domain=key.domain))
    finally:
        await provider.close()
    assert result.ok
    data = (tmp_path / "md" / "new" / str(result.message_id)).read_bytes()
    assert data.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
    assert_wire_safe(data)
    assert verifies(data, key)


async def test_a_chain_signs_with_every_link(tmp_path: Path, edge: AsyncioEdge) -> None:
    key = key_for("rsa.example.com")
    config = load_config(
        "embedded",
        env={},
        overrides={
            "provider": {
                "kind": "chain",
                "maildir_path": str(tmp_path / "md"),
                "chain": [{"kind": "smtp", "name": "relay"}, {"kind": "maildir"}],
            },
            "provider.smtp": {"host": "127.0.0.1", "port": 9, "timeout_s": 2.0},
            "dkim.domains": {
                key.domain: {"selector": "s1", "key_file": str(write_key(tmp_path, key))}
            },
        },
    )
    chain = make_provider(config.provider, signer=make_signer(config.dkim))
    await chain.open()
    try:
        result = await chain.send(email(domain=key.domain))  # the relay refuses: maildir
    finally:
        await chain.close()
    assert result.ok and result.provider == "maildir"
    assert verifies((tmp_path / "md" / "new" / str(result.message_id)).read_bytes(), key)


# -- [dkim] at start-up -------------------------------------------------------------------


def dkim_config(tmp_path: Path, domains: dict[str, Any], **dkim: Any) -> DkimConfig:
    config = load_config("embedded", env={}, overrides={"dkim": {"domains": domains, **dkim}})
    return config.dkim


def test_keys_from_a_file_and_from_the_environment(tmp_path: Path) -> None:
    rsa, ed = key_for("example.com"), key_for("example.net", "ed25519-sha256")
    env = {"DKIM_NET_KEY": private_key_pem(ed.private_key).decode()}
    config = dkim_config(
        tmp_path,
        {
            "example.com": {"selector": "s1", "key_file": str(write_key(tmp_path, rsa))},
            "example.net": {
                "selector": "s1",
                "algorithm": "ed25519-sha256",
                "key_env": "DKIM_NET_KEY",
            },
        },
    )
    signer = make_signer(config, env)
    assert signer is not None and set(signer.keys) == {"example.com", "example.net"}
    assert signer.keys["example.net"].public_key_b64() == ed.public_key_b64()
    assert "PRIVATE" not in repr(signer) and "PRIVATE" not in repr(config)
    assert make_signer(dkim_config(tmp_path, {})) is None


def test_a_relative_key_file_is_resolved_against_the_project_root(tmp_path: Path) -> None:
    config = dkim_config(tmp_path, {"example.com": {"selector": "s1", "key_file": "var/k.key"}})
    assert Path(config.domains["example.com"].key_file).is_absolute()


def test_bad_dkim_config_stops_start_up_with_one_line_naming_the_field(tmp_path: Path) -> None:
    rsa_file = write_key(tmp_path, key_for("example.com"), "rsa.key")
    ed_file = write_key(tmp_path, key_for("example.com", "ed25519-sha256"), "ed.key")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    empty = tmp_path / "empty.key"
    empty.write_text("")
    field = 'dkim.domains."example.com".'
    cases: list[tuple[dict[str, Any], str]] = [
        ({"selector": "s1"}, field + "key_file: missing key: set key_file or key_env"),
        (
            {"selector": "s1", "key_file": str(tmp_path / "nope.key")},
            field + "key_file: cannot read secret file",
        ),
        ({"selector": "s1", "key_file": str(empty)}, field + "key_file: secret file"),
        ({"selector": "s1", "key_env": "NO_SUCH_DKIM_VAR"}, field + "key_env: environment"),
        (
            {"selector": "s1", "key_file": str(garbage)},
            field + "key_file: not a readable PEM private key",
        ),
        (
            {"selector": "s1", "key_file": str(ed_file)},
            field + "key_file: key/algorithm mismatch: an Ed25519 key, but algorithm is "
            "'rsa-sha256'",
        ),
        (
            {"selector": "s1", "algorithm": "ed25519-sha256", "key_file": str(rsa_file)},
            field + "key_file: key/algorithm mismatch: an RSA key",
        ),
        ({"selector": "a..b", "key_file": str(rsa_file)}, field + "selector: not a DKIM selector"),
    ]
    for entry, expected in cases:
        with pytest.raises(ConfigError) as caught:
            make_signer(dkim_config(tmp_path, {"example.com": entry}), env={})
        message = str(caught.value)
        assert message.startswith(expected), message
        assert "\n" not in message and "BEGIN" not in message and "AAAA" not in message
    with pytest.raises(ConfigError, match=r"^dkim\.require: true, but dkim\.domains names no"):
        make_signer(dkim_config(tmp_path, {}, require=True))
    with pytest.raises(ConfigError, match=r"dkim\.domains\.example\.com\.algorithm: expected one"):
        dkim_config(tmp_path, {"example.com": {"selector": "s1", "algorithm": "rsa"}})
    with pytest.raises(ConfigError, match=r"dkim\.domains\.example\.com\.key: unknown key"):
        dkim_config(tmp_path, {"example.com": {"selector": "s1", "key": "inline!"}})


def test_every_provider_gets_its_bytes_from_final_bytes() -> None:
    # Signing happens in final_bytes; a provider rendering bytes itself would send them unsigned.
    import actors.providers as package

    sources = {
        path.name: path.read_text() for path in Path(package.__file__).parent.glob("*.py")
    }
    signature = "async def send(self, email: OutgoingEmail)"
    senders = {name for name, text in sources.items() if signature in text}
    assert {"maildir.py", "smtp.py", "ses.py", "chain.py"} <= senders
    for name in senders - {"chain.py"}:  # the chain hands each email to its providers
        assert "final_bytes(" in sources[name], name
        assert "render_bytes(" not in sources[name] and "as_bytes(" not in sources[name], name
