"""The command line as a user runs it: ``send --var`` / ``--json-var``.

A ``--var`` value is the text typed, whatever it looks like; JSON only with
``--json-var``; and a null never reaches an email (the template layer refuses
to print it, for gRPC clients too).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import supervisor
from tests.embedded_process import cli, embedded_env, running_embedded, wait_maildir


def test_var_values_are_strings() -> None:
    assert supervisor.parse_vars(["name=null", "code=12e3", "n=007", "flag=true", "e=", "x=a=b"]) == {
        "name": "null",
        "code": "12e3",
        "n": "007",
        "flag": "true",
        "e": "",
        "x": "a=b",
    }


def test_json_var_values_are_json() -> None:
    got = supervisor.parse_vars(["name=Ada"], ["n=3", "items=[1, \"two\"]", "none=null"])
    assert got == {"name": "Ada", "n": 3, "items": [1, "two"], "none": None}


@pytest.mark.parametrize(
    ("var", "json_var", "message"),
    [
        (["novalue"], [], "--var expects KEY=VALUE"),
        (["=x"], [], "--var expects KEY=VALUE"),
        ([], ["n={bad"], "--json-var n: not JSON"),
        (["n=1"], ["n=2"], "'n' given twice"),
    ],
)
def test_bad_vars_are_refused(var: list[str], json_var: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        supervisor.parse_vars(var, json_var)


async def test_send_var_is_delivered_as_typed(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    async with running_embedded(env, tmp_path / "up.log"):
        done = await cli(
            env, "send", "--to", "ada@example.com", "--template", "verification",
            "--var", "name=null", "--var", "code=12e3", "--var", "expires_minutes=10",
        )
        assert done.returncode == 0, done.stderr.decode()
        (msg,) = await wait_maildir(tmp_path / "maildir", 1)
        assert str(msg["Subject"]) == "12e3 is your verification code"
        body = msg.get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert text.startswith("Hello null,\r\n")
        assert "None" not in text and "12000" not in text

        # JSON on request; a null the template would print is refused, naming it.
        done = await cli(
            env, "send", "--to", "ada@example.com", "--template", "welcome",
            "--json-var", "name=null", "--var", "product=Acme",
        )
        assert done.returncode == 1
        err = done.stderr.decode()
        assert "INVALID_ARGUMENT" in err and "'name' is null" in err, err
        done = await cli(
            env, "send", "--to", "ada@example.com", "--template", "verification",
            "--var", "name=Ada", "--json-var", "code=123456", "--json-var", "expires_minutes=10",
        )
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(done.stdout)["duplicate"] is False
        msgs = await wait_maildir(tmp_path / "maildir", 2)
        assert sorted(str(m["Subject"]) for m in msgs) == [
            "123456 is your verification code",
            "12e3 is your verification code",
        ]
