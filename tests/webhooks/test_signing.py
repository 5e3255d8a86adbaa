"""The signature scheme and the receiver's helper (actors/webhooks/signing.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from actors.webhooks import WebhookVerificationError, sign, verify

# The example of the Standard Webhooks specification (and Svix's libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(signature: str, msg_id: str = SPEC_ID, ts: int = SPEC_TS) -> dict[str, str]:
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(ts), "Webhook-Signature": signature}


def test_the_specifications_example() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE
    body = verify(SPEC_SECRET, headers(SPEC_SIGNATURE), SPEC_BODY, now=SPEC_TS + 10)
    assert body == {"test": 2432232314}


def test_a_rotated_secret_signs_twice_and_either_verifies() -> None:
    both = f"v1,bm90LWl0 {SPEC_SIGNATURE}"
    assert verify(SPEC_SECRET, headers(both), SPEC_BODY, now=SPEC_TS) == {"test": 2432232314}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"body": b'{"test": 2432232315}'}, "no valid v1 signature"),
        ({"secret": "whsec_" + "A" * 32}, "no valid v1 signature"),
        ({"msg_id": "msg_other"}, "no valid v1 signature"),
        ({"now": SPEC_TS + 301}, "more than 300 s from now"),
        ({"now": SPEC_TS - 301}, "more than 300 s from now"),
        ({"signature": SPEC_SIGNATURE.replace("v1,", "v2,")}, "no valid v1 signature"),
        ({"signature": ""}, "missing"),
        ({"ts": "soon"}, "not an integer"),
    ],
)
def test_what_does_not_verify(change: dict[str, object], message: str) -> None:
    h = headers(str(change.get("signature", SPEC_SIGNATURE)), str(change.get("msg_id", SPEC_ID)))
    h["Webhook-Timestamp"] = str(change.get("ts", SPEC_TS))
    body = change.get("body", SPEC_BODY)
    secret = change.get("secret", SPEC_SECRET)
    now = change.get("now", SPEC_TS)
    with pytest.raises(WebhookVerificationError, match=message):
        verify(secret, h, body, now=now)  # type: ignore[arg-type]


def test_the_helper_needs_nothing_but_the_standard_library(tmp_path: Path) -> None:
    # A receiver copies the one file: it must import and run with no mailactors around it.
    source = Path(__file__).parents[2] / "actors" / "webhooks" / "signing.py"
    copy = tmp_path / "signing.py"
    copy.write_text(source.read_text())
    script = (
        "import sys; sys.path[:0] = [sys.argv[1]]; import signing;"
        f"print(signing.verify({SPEC_SECRET!r}, {headers(SPEC_SIGNATURE)!r}, {SPEC_BODY!r},"
        f" now={SPEC_TS}))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.stdout.strip() == "{'test': 2432232314}"
