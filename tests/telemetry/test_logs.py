"""Logs an operator can follow: one line per email per step at INFO, carrying its eventId;
libraries' chatter out unless named; floods said once per period; multi-line messages
kept as lines."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from actors.telemetry.logs import JsonFormatter, Sampled, configure
from runtime import ChildSpec, ProcessActor, Restart, SupervisorSpec, open_actor_system
from tests.support.embedded_process import cli, embedded_env, running_embedded, wait_maildir
from tests.support.logs import RecordingHandler


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = ("hpack", "h2", "aiormq", "mailactors")
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def test_library_debug_chatter_stays_out_unless_named(restore_logging: None) -> None:
    configure("DEBUG", "text", loggers="")
    assert not logging.getLogger("hpack.hpack").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("h2.connection").isEnabledFor(logging.INFO)
    assert not logging.getLogger("aiormq.connection").isEnabledFor(logging.ERROR)
    assert logging.getLogger("mailactors.email_server").isEnabledFor(logging.DEBUG)
    configure("DEBUG", "text", loggers="hpack=DEBUG,aiormq=info,bad,=x")
    assert logging.getLogger("hpack.hpack").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("aiormq.connection").isEnabledFor(logging.INFO)
    assert not logging.getLogger("h2.connection").isEnabledFor(logging.INFO)


def test_json_lines_keep_a_multi_line_message_as_lines() -> None:
    record = logging.makeLogRecord(
        {"name": "runtime.supervisor", "levelname": "ERROR", "levelno": 40,
         "msg": "mailactors/auth failed: exited with 1; last output:\n%s\n%s",
         "args": ('{"msg": "one"}', "two")}  # fmt: skip
    )
    out = json.loads(JsonFormatter().format(record))
    assert out["msg"] == "mailactors/auth failed: exited with 1; last output:"
    assert out["lines"] == ['{"msg": "one"}', "two"]


async def test_sampled_says_one_per_period_and_counts_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sampled = Sampled(10.0)
    assert sampled.take() == 0
    assert [sampled.take() for _ in range(5)] == [None] * 5
    await trio.sleep(10)
    assert sampled.take() == 5
    assert sampled.take() is None


SEND = ("send", "--to", "ada@example.com", "--template", "welcome",
        "--var", "name=Ada", "--var", "product=Acme", "--key", "k16")  # fmt: skip


async def test_grep_event_id_follows_an_email_at_the_default_level(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    log = tmp_path / "up.log"
    async with running_embedded(env, log):
        sent = await cli(env, *SEND)
        assert sent.returncode == 0, sent.stderr
        event_id = json.loads(sent.stdout)["eventId"]
        await wait_maildir(tmp_path / "maildir", 1)
        repeat = await cli(env, *SEND)
        assert json.loads(repeat.stdout)["duplicate"] is True
    lines = [line for line in log.read_text().splitlines() if event_id in line]
    assert any(" INFO " in line and "accepted: template welcome" in line for line in lines), lines
    assert any(" INFO " in line and "sent by maildir" in line for line in lines), lines
    # The repeat is counted (auth's "duplicates"), not logged per request.
    assert not any("repeat request" in line for line in lines), lines


async def test_a_crashed_process_is_logged_with_its_last_output_as_lines() -> None:
    code = ("import sys, time; print('READY', flush=True); time.sleep(0.2); "
            "print('connecting to the store', flush=True); print('gave up', flush=True); "
            "sys.exit(3)")  # fmt: skip
    spec = SupervisorSpec("launcher", [ChildSpec(
        "svc", ProcessActor, args=([sys.executable, "-u", "-c", code],),
        kwargs={"ready_marker": "READY", "output": io.StringIO()}, restart=Restart.TEMPORARY,
    )])  # fmt: skip
    handler = RecordingHandler("svc failed")
    logger = logging.getLogger("runtime.supervisor")
    logger.addHandler(handler)
    try:
        async with open_actor_system("t") as system:
            await system.spawn(spec)
            with trio.fail_after(20):
                await handler.seen.wait()
    finally:
        logger.removeHandler(handler)
    record = next(r for r in handler.records if "svc failed" in r.getMessage())
    out = json.loads(JsonFormatter().format(record))
    assert out["msg"].startswith("launcher/svc failed: ProcessExited:")
    assert out["lines"][-2:] == ["connecting to the store", "gave up"]
