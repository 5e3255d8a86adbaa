"""The VERP return path: round trip for every eventId form, tampering refused, 64 octets."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.feedback import VerpCodec
from actors.feedback.verp import MAX_LOCAL_PART, decode_event_id, encode_event_id  # internals

KEY = "k" * 32
codec = VerpCodec(KEY, "bounces.example.com")

# Every eventId the system accepts: actors.domain.event_checks.EVENT_ID_PATTERN.
event_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")

# RFC 5321 dot-atom: atext runs separated by single dots.
DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@given(event_ids)
def test_every_event_id_round_trips_in_a_valid_local_part(event_id: str) -> None:
    address = codec.address(event_id)
    local, _, domain = address.rpartition("@")
    assert domain == "bounces.example.com"
    assert len(local.encode()) <= MAX_LOCAL_PART
    assert DOT_ATOM.fullmatch(local), local
    verified = codec.verify(address)
    assert verified is not None
    assert codec.matches(verified, event_id)
    assert not codec.matches(verified, event_id + "x")
    # An MTA that folds the case of the return path does not break it.
    assert codec.verify(address.upper()) == verified
    assert codec.verify(address.lower()) == verified


@given(st.text(alphabet="abcXYZ019._:-", min_size=1, max_size=40))
def test_encoding_is_reversible(text: str) -> None:
    encoded = encode_event_id(text)
    assert encoded == encoded.lower()
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]*", text):
        assert decode_event_id(encoded) == text
        assert decode_event_id(encoded.upper()) == text


def test_uuid_event_ids_are_written_as_they_are() -> None:
    event_id = str(uuid.uuid4())
    local = codec.local_part(event_id)
    assert local.startswith(f"bounces+{event_id}.")
    assert codec.verify(codec.address(event_id)) is not None
    assert codec.verify(codec.address(event_id)).event_id == event_id  # type: ignore[union-attr]


def test_a_long_event_id_uses_the_digest_form() -> None:
    event_id = "Order:" + "A" * 120
    address = codec.address(event_id)
    assert address.startswith("bounces+=")
    verified = codec.verify(address)
    assert verified is not None and verified.event_id is None
    assert codec.matches(verified, event_id)
    assert not codec.matches(verified, "Order:" + "A" * 119)


def test_tampering_is_refused() -> None:
    event_id = "9b2f0d3c-1111-4aaa-8bbb-123456789abc"
    address = codec.address(event_id)
    local, _, domain = address.rpartition("@")
    token = local.partition("+")[2]
    body, _, tag = token.rpartition(".")
    other = codec.address("9b2f0d3c-1111-4aaa-8bbb-123456789abd")
    forged = [
        # another eventId with this tag
        f"bounces+{body[:-1]}d.{tag}@{domain}",
        # a tag changed in one character
        f"bounces+{body}.{tag[:-1]}{'a' if tag[-1] != 'a' else 'b'}@{domain}",
        # the tag of another eventId
        f"bounces+{body}.{other.rpartition('.')[2].partition('@')[0]}@{domain}",
        # a key we do not hold
        VerpCodec("x" * 32, domain).address(event_id),
        # another domain, another prefix
        address.replace("@bounces.example.com", "@example.org"),
        address.replace("bounces+", "bounce+"),
        # no tag, a truncated tag, a malformed token, a bad escape
        f"bounces+{body}@{domain}",
        f"bounces+{body}.{tag[:10]}@{domain}",
        f"bounces+..{tag}@{domain}",
        f"bounces+a_9.{tag}@{domain}",
        f"bounces+={'a' * 16}.{tag}@{domain}",
        "",
        "@",
    ]
    for candidate in forged:
        assert codec.verify(candidate) is None, candidate
    assert codec.verify(f"<{address}>") is not None


def test_bad_keys_and_ids_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        VerpCodec("short", "example.com")
    with pytest.raises(ValueError, match="domain"):
        VerpCodec(KEY, "a@b")
    with pytest.raises(ValueError, match="prefix"):
        VerpCodec(KEY, "example.com", "Bounces")
    with pytest.raises(ValueError, match="eventId"):
        codec.address("has space")
    assert "k" * 16 not in repr(codec)


def test_a_longer_prefix_still_fits() -> None:
    long = VerpCodec(KEY, "example.com", "p" * 16)
    for event_id in (str(uuid.uuid4()), "x" * 128, "A:B.C_D" * 6):
        local = long.local_part(event_id)
        assert len(local) <= MAX_LOCAL_PART
        verified = long.verify(long.address(event_id))
        assert verified is not None and long.matches(verified, event_id)


def test_the_key_comes_from_the_environment_or_a_file_only(tmp_path: Path) -> None:
    from actors.feedback import verp_codec
    from config import BouncesConfig, ConfigError, load_config

    assert verp_codec(BouncesConfig()) is None  # off by default
    section = BouncesConfig(enabled=True, domain="b.example.com", secret_env="VERP_KEY")
    codec = verp_codec(section, env={"VERP_KEY": KEY})
    assert codec is not None and codec.verify(codec.address("e-1")) is not None
    with pytest.raises(ConfigError, match="VERP_KEY") as err:
        verp_codec(section, env={})
    assert KEY not in str(err.value)
    with pytest.raises(ConfigError, match="16 bytes"):
        verp_codec(section, env={"VERP_KEY": "short"})
    with pytest.raises(ConfigError, match="secret"):
        load_config("embedded", env={}, overrides={"bounces": {"enabled": True, "domain": "b.x"}})
    with pytest.raises(ConfigError, match="domain"):
        load_config("embedded", env={}, overrides={"bounces": {"enabled": True,
                                                                 "secret_env": "K"}})  # fmt: skip
    with pytest.raises(ConfigError, match="secret"):  # no key field in TOML, by design
        load_config("embedded", env={}, overrides={"bounces": {"secret": KEY}})


def test_the_key_is_hidden_in_every_log_line(tmp_path: Path) -> None:
    from actors.telemetry.redact import redact, register_config_secrets
    from tests.support.feedback import KEY as FILE_KEY
    from tests.support.feedback import bounces_config

    register_config_secrets(bounces_config(tmp_path))
    assert FILE_KEY not in redact(f"something logged the key {FILE_KEY} by mistake")


def test_after_a_rotation_the_previous_key_is_still_accepted() -> None:
    old = VerpCodec("old-key-" + "o" * 24, "bounces.example.com")
    new = VerpCodec("new-key-" + "n" * 24, "bounces.example.com")
    rotated = VerpCodec("new-key-" + "n" * 24, "bounces.example.com",
                        previous=("old-key-" + "o" * 24,))  # fmt: skip
    for event_id in ("e-1", "x" * 128):
        before = old.address(event_id)
        assert new.verify(before) is None  # without the previous key: refused
        verified = rotated.verify(before)
        assert verified is not None and rotated.matches(verified, event_id)
        assert rotated.address(event_id) == new.address(event_id)  # made with the new key only
    assert "o" * 24 not in repr(rotated)
