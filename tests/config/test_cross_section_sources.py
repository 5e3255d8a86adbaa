"""A check across sections names where its own keys came from, not every variable set."""

from __future__ import annotations

import pytest

from config import ConfigError, load_config

UNRELATED = {"MAILACTORS__GRPC__AUTH_PORT": "50999", "MAILACTORS__GRPC__DEADLINE_S": "3"}


def test_a_cross_section_error_names_the_sources_of_its_keys_only() -> None:
    env = {
        **UNRELATED,
        "MAILACTORS__STORE__BATCH_SIZE": "10",
        "MAILACTORS__FEEDBACK__SES__ENABLED": "true",
        "MAILACTORS__HTTP__ENABLED": "false",
    }
    with pytest.raises(ConfigError) as caught:
        load_config("embedded", env=env)
    line = str(caught.value)
    assert "feedback.ses.enabled needs the HTTP endpoint" in line
    assert "environment variable MAILACTORS__FEEDBACK__SES__ENABLED" in line
    assert "environment variable MAILACTORS__HTTP__ENABLED" in line
    for unrelated in ["MAILACTORS__STORE__BATCH_SIZE", *UNRELATED]:
        assert unrelated not in line, line
