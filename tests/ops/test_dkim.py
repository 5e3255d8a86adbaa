"""``supervisor.py dkim keygen`` and ``dkim show`` (actors.ops.dkim), in process.

The same commands run as a user runs them (a subprocess, keys from a file and from the
environment, ``up`` refusing a bad key) in tests/system/test_dkim_delivery.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.domain.dkim import load_private_key
from actors.ops.dkim import keygen, show
from config import ConfigError, DkimConfig, load_config
from tests.support.dkim import key_for, write_key

DOMAIN = "example.com"


def dkim_config(domains: dict[str, dict[str, str]]) -> DkimConfig:
    return load_config("embedded", env={}, overrides={"dkim.domains": domains}).dkim


@pytest.mark.parametrize(("algorithm", "strings"), [("rsa", 2), ("ed25519", 1)])
def test_keygen_writes_a_private_key_0600_and_show_prints_its_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], algorithm: str, strings: int
) -> None:
    out = tmp_path / "keys" / "example.com.key"
    assert keygen(DOMAIN, "mail2026", algorithm, str(out), as_json=True) == 0
    made = json.loads(capsys.readouterr().out)
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert made["name"] == "mail2026._domainkey.example.com" and made["type"] == "TXT"
    assert made["value"].startswith(f"v=DKIM1; k={algorithm}; p=")
    assert len(made["strings"]) == strings and "".join(made["strings"]) == made["value"]
    assert all(len(s) <= 255 for s in made["strings"])

    alg = "rsa-sha256" if algorithm == "rsa" else "ed25519-sha256"
    entry = {"selector": "mail2026", "algorithm": alg, "key_file": str(out)}
    config = dkim_config({DOMAIN: entry})
    assert show(config, DOMAIN, as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == made
    assert show(config, "EXAMPLE.com.") == 0  # as typed in a zone file
    zone = capsys.readouterr().out
    strings_text = "\n    ".join(f'"{s}"' for s in made["strings"])
    assert f"mail2026._domainkey.example.com. IN TXT ( {strings_text} )" in zone
    assert "PRIVATE" not in zone and load_private_key(out.read_bytes(), alg)  # type: ignore[arg-type]


def test_keygen_never_overwrites_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "taken.key"
    out.write_text("something else")
    assert keygen(DOMAIN, "s1", "ed25519", str(out)) == 1
    assert "exists; not overwritten" in capsys.readouterr().err
    assert out.read_text() == "something else"
    assert keygen(DOMAIN, "bad selector", "ed25519", str(tmp_path / "x.key")) == 2
    assert "not a DKIM selector" in capsys.readouterr().err
    assert not (tmp_path / "x.key").exists()


def test_show_names_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = key_for(DOMAIN, "ed25519-sha256")
    entry = {"selector": "s1", "algorithm": "ed25519-sha256"}
    config = dkim_config({DOMAIN: entry | {"key_file": str(write_key(tmp_path, key))}})
    assert show(config, "other.example") == 1
    assert 'no [dkim.domains."other.example"] in this profile (signing domains: example.com)' in (
        capsys.readouterr().err
    )
    wrong = dkim_config({DOMAIN: {"selector": "s1", "key_file": str(tmp_path / "gone.key")}})
    with pytest.raises(ConfigError, match=r'^dkim\.domains\."example\.com"\.key_file: cannot read'):
        show(wrong, DOMAIN)
