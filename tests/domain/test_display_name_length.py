"""A display name can be long, non-ASCII and still never make a line over RFC 5322's 998
octets: validation caps it (characters and UTF-8 octets, naming the field), and the
encoder splits anything longer rather than write such a line."""

from __future__ import annotations

from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser
from types import SimpleNamespace

import pytest

from actors.domain.addressing import (
    MAX_NAME_CHARS,
    MAX_NAME_OCTETS,
    SenderPolicy,
    check_addressing,
    format_sender,
)
from actors.domain.mime import build_message, render_bytes
from actors.domain.validation import InvalidField
from tests.support.emails import outgoing_email

POLICY = SenderPolicy.build("Mail <noreply@example.com>", ["example.com"])


def _rendered_lines(sender: str) -> tuple[list[bytes], bytes]:
    out = []
    for eight_bit in (True, False):
        data = render_bytes(build_message(outgoing_email(sender=sender)), eight_bit=eight_bit)
        out.append(data)
    return [line for data in out for line in data.split(b"\r\n")], out[0]


@pytest.mark.parametrize(
    "name",
    [
        "😀" * (MAX_NAME_OCTETS // 4),  # 4-octet characters up to the octet cap
        "山" * MAX_NAME_CHARS,  # 3-octet characters: both caps at once
        "é" * MAX_NAME_CHARS,
        "a " * (MAX_NAME_CHARS // 2 - 1) + "a",
    ],
)
def test_the_longest_allowed_names_fit_in_998_octets_and_survive(name: str) -> None:
    given = SimpleNamespace(category="t", from_address="x@example.com", from_name=name)
    checked = check_addressing(given, policy=POLICY, recipient="ada@example.org")
    assert checked.from_name == name
    lines, data = _rendered_lines(format_sender("x@example.com", checked.from_name))
    assert max(map(len, lines)) <= 998
    parsed = BytesParser(policy=policy.default).parsebytes(data)
    assert parsed["From"].addresses[0].display_name == name


def test_a_longer_name_is_refused_naming_the_field() -> None:
    for name, why in (
        ("😀" * (MAX_NAME_OCTETS // 4) + "é", f"more than {MAX_NAME_OCTETS}"),
        ("a" * (MAX_NAME_CHARS + 1), f"more than {MAX_NAME_CHARS}"),
    ):
        given = SimpleNamespace(category="t", from_address="x@example.com", from_name=name)
        with pytest.raises(InvalidField) as info:
            check_addressing(given, policy=POLICY, recipient="ada@example.org")
        assert info.value.field == "from_name" and why in str(info.value)


def test_a_configured_sender_name_is_held_to_the_same_caps() -> None:
    with pytest.raises(InvalidField) as info:
        SenderPolicy.build("山" * 730 + " <noreply@example.com>")
    assert info.value.field == "provider.sender" and "display name" in str(info.value)
    with pytest.raises(InvalidField) as info:
        SenderPolicy.build("x@example.com", [], {"news": "😀" * 160 + " <n@example.com>"})
    assert info.value.field == "api.default_senders.news"
    assert f"octets in UTF-8, more than {MAX_NAME_OCTETS}" in str(info.value)


def test_a_name_past_the_caps_is_still_written_in_lines_of_998_at_most() -> None:
    """What used to be one encoded word on a 1,000+ octet line (unchecked input reaching
    the encoder): split into encoded words, which RFC 2047 decoders join back."""
    name = "山" * 730
    lines, data = _rendered_lines(f'"{name}" <noreply@example.com>')
    assert max(map(len, lines)) <= 998
    parsed = BytesParser(policy=policy.compat32).parsebytes(data)
    raw_from = str(parsed["From"])
    decoded = str(make_header(decode_header(raw_from.rsplit("<", 1)[0].strip())))
    assert decoded == name
