"""``provider.sender`` may be ``Name <address>``: the sender's settings take the domain
from the address (Message-ID, List-Unsubscribe), not from the raw text."""

from __future__ import annotations

from actors.profiles.trees import sender_settings
from config import load_config


def _settings(sender: str, **more: str) -> str:
    config = load_config("embedded", env={}, overrides={"provider.sender": sender, **more})
    return sender_settings(config).message_id_domain


def test_the_message_id_domain_is_the_sender_address_domain() -> None:
    assert _settings("Mail Team <noreply@mail.example.com>") == "mail.example.com"
    assert _settings('"Acme, Inc." <a@example.org>') == "example.org"
    assert _settings("noreply@example.net") == "example.net"
    assert _settings("Mail <a@b.example>", **{"provider.message_id_domain": "m.example"}) == (
        "m.example"
    )
