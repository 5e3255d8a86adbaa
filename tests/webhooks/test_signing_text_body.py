"""Receivers whose framework hands them the body as text (Flask's get_data(as_text=True),
Express, ...) verify with the same call; a bad signature is still a verification error."""

from __future__ import annotations

import pytest

from actors.webhooks import WebhookVerificationError, verify

# The Standard Webhooks specification's example (as in test_signing.py).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HEADERS = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}


def test_a_text_body_verifies_like_its_bytes() -> None:
    assert verify(SECRET, HEADERS, '{"test": 2432232314}', now=1614265340) == {"test": 2432232314}


def test_an_altered_text_body_is_a_verification_error() -> None:
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, HEADERS, '{"test": 2432232315}', now=1614265340)
