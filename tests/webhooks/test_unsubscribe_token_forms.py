"""Only the exact string a token was written as is accepted: no other spelling decodes to it."""

from __future__ import annotations

import base64

import pytest

from actors.webhooks import TokenError, UnsubscribeTokens

KEY = "unsubscribe-key-for-tests"


def _spellings(token: str) -> list[str]:
    """Strings Python's lenient urlsafe decoder reads as the same bytes as ``token``."""
    last = token[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = {4: 4, 2: 2}.get(len(token) * 6 % 8, 0)  # bits of the last character not used
    index = alphabet.index(last)
    siblings = [alphabet[(index & ~((1 << spare) - 1)) | low] for low in range(1 << spare)]
    forms = [token[:-1] + c for c in siblings if c != last]
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert all(base64.urlsafe_b64decode(f + "=" * (-len(f) % 4)) == raw for f in forms)
    # Characters outside the alphabet are dropped by the decoder (four keep the padding right).
    return [*forms, token[:5] + "!.!\n" + token[5:], token + "="]


@pytest.mark.parametrize("recipient", ["u6@example.net", "ada@example.com", "bo@x.io"])
def test_another_spelling_of_a_good_token_is_refused(recipient: str) -> None:
    tokens = UnsubscribeTokens(KEY, ("newsletter",), ttl_s=3600, clock=lambda: 1_000_000.0)
    token = tokens.make(recipient, "newsletter")
    assert tokens.check(token) == (recipient, "newsletter")
    for form in _spellings(token):
        with pytest.raises(TokenError) as caught:
            tokens.check(form)
        assert caught.value.status == 400, form
