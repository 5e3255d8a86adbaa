"""The command line as a user runs it: ``send --var`` / ``--json-var``, ``send --batch``.

A ``--var`` value is the text typed, whatever it looks like; JSON only with
``--json-var``; and a null never reaches an email (the template layer refuses
to print it, for gRPC clients too).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from actors.ops.client import parse_vars
from actors.ops.send_batch import EXIT_UNANSWERED, line_ranges
from tests.support.embedded_process import (
    SUPERVISOR,
    cli,
    embedded_env,
    running_embedded,
    wait_maildir,
)


def test_var_values_are_strings() -> None:
    assert parse_vars(["name=null", "code=12e3", "n=007", "flag=true", "e=", "x=a=b"]) == {
        "name": "null",
        "code": "12e3",
        "n": "007",
        "flag": "true",
        "e": "",
        "x": "a=b",
    }


def test_json_var_values_are_json() -> None:
    got = parse_vars(["name=Ada"], ["n=3", "items=[1, \"two\"]", "none=null"])
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
        parse_vars(var, json_var)


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


# -- send --batch when the server stops mid-run ------------------------------------


def test_line_ranges() -> None:
    assert line_ranges([9, 1, 2, 3, 7, 10]) == "1-3, 7, 9-10"
    assert line_ranges([]) == ""


def _write_batch(path: Path, count: int, bad: frozenset[int] = frozenset()) -> None:
    with path.open("w") as f:
        for n in range(1, count + 1):
            if n in bad:
                f.write("not json\n")
                continue
            line = {"to": f"user{n}@example.com", "template": "welcome",
                    "variables": {"name": f"U{n}", "product": "Acme"}, "key": f"batch-{n}"}
            f.write(json.dumps(line) + "\n")


def _records(stdout: bytes) -> dict[int, dict[str, object]]:
    records = [json.loads(line) for line in stdout.decode().splitlines()]
    by_line = {r["line"]: r for r in records}
    assert len(by_line) == len(records)  # one record per line
    return by_line


async def test_batch_with_no_server_reports_every_line_unanswered(tmp_path: Path) -> None:
    batch = tmp_path / "batch.jsonl"
    _write_batch(batch, 4, bad=frozenset({2}))
    env = embedded_env(tmp_path)  # a free port: nothing listens there
    done = await cli(env, "send", "--batch", str(batch), "--quiet")
    err = done.stderr.decode()
    assert done.returncode == EXIT_UNANSWERED, err
    assert "Traceback" not in err
    assert "error: no mailactors service at" in err
    assert "4 requests, 1 answered: 0 accepted" in err
    assert "1 refused (lines 2)" in err and "3 unanswered (lines 1, 3-4)" in err
    records = _records(done.stdout)
    assert sorted(records) == [1, 2, 3, 4]
    assert "error" in records[2] and all("unanswered" in records[n] for n in (1, 3, 4))


async def test_batch_when_the_server_stops_mid_run(tmp_path: Path) -> None:
    count = 5000
    batch = tmp_path / "batch.jsonl"
    _write_batch(batch, count, bad=frozenset({3}))
    env = embedded_env(tmp_path)
    async with running_embedded(env, tmp_path / "up.log") as server:
        argv = [sys.executable, SUPERVISOR, "--profile", "embedded", "send", "--batch",
                str(batch), "--quiet", "--concurrency", "4"]
        client = await trio.lowlevel.open_process(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert client.stdout is not None and client.stderr is not None
        out = bytearray()
        with trio.fail_after(60):
            # Stop the server for good once some requests were answered.
            while out.count(b"eventId") < 10:
                chunk = await client.stdout.receive_some()
                assert chunk, "the batch ended before the server was stopped"
                out += chunk
            server.kill()
            await server.wait()
            async with trio.open_nursery() as nursery:

                async def drain_stdout() -> None:
                    assert client.stdout is not None
                    async for chunk in client.stdout:
                        out.extend(chunk)

                err = bytearray()

                async def drain_stderr() -> None:
                    assert client.stderr is not None
                    async for chunk in client.stderr:
                        err.extend(chunk)

                nursery.start_soon(drain_stdout)
                nursery.start_soon(drain_stderr)
                await client.wait()
    stderr = err.decode()
    assert client.returncode == EXIT_UNANSWERED, stderr
    assert "Traceback" not in stderr
    assert (
        f"error: the connection to 127.0.0.1:{env['MAILACTORS__GRPC__AUTH_PORT']} was lost"
        in stderr
    )
    records = _records(bytes(out))
    assert sorted(records) == list(range(1, count + 1))  # every line accounted for
    accepted = [n for n, r in records.items() if "eventId" in r]
    refused = [n for n, r in records.items() if "error" in r]
    unanswered = [n for n, r in records.items() if "unanswered" in r]
    assert len(accepted) >= 10 and refused == [3] and unanswered
    summary = (
        f"{count} requests, {len(accepted) + 1} answered: {len(accepted)} accepted "
        f"(0 repeats of an idempotency key), 1 refused (lines 3), "
        f"{len(unanswered)} unanswered (lines {line_ranges(unanswered)})"
    )
    assert summary in stderr
