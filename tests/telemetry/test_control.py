"""The control endpoint, the intake gate, metrics and log redaction, in one process.

The distributed end of the same features (real processes, the console as a
subprocess, a scrape over HTTP, a user without access) is tests/system/test_operations.py.
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from actors.bus.memory import MemoryBus
from actors.domain.edges import SendResult
from actors.domain.schema import EmailSendEvent, EmailStatusEvent, Status
from actors.email_server.service import Consumer, SendJob
from actors.email_server.throttle import Acquire, Throttler
from actors.ops.console import Rates, discover, matches, render
from actors.telemetry.metrics import EmailMetrics, SystemCollector, code_class, instrument
from actors.telemetry.operations import Operations, instance_port
from actors.telemetry.redact import RedactingFormatter, add_secrets, redact
from runtime import (
    Actor,
    ActorState,
    ActorSystem,
    ChildSpec,
    ControlClient,
    ControlEndpoint,
    ControlError,
    ControlRefused,
    IntakeGate,
    SupervisorSpec,
    serve_control_tcp,
    serve_control_unix,
)
from runtime.testing import wait_for_state


class Ping(msgspec.Struct):
    pass


class Worker(Actor[Ping]):
    accepts: ClassVar[tuple[type, ...]] = (Ping,)
    mailbox: ClassVar[int] = 8

    async def started(self) -> None:
        self.ctx.report(lambda: {"hello": 1})

    async def receive(self, msg: Ping) -> str:
        return "pong"


def tree() -> SupervisorSpec:
    return SupervisorSpec("svc", [ChildSpec("a", Worker), ChildSpec("b", Worker)])


# -- the intake gate ----------------------------------------------------------------


async def test_gate_pause_cancels_a_waiting_take_and_resume_takes_again(autojump_clock):
    gate = IntakeGate()
    send, receive = trio.open_memory_channel[int](10)
    taken: list[int] = []

    async def taker() -> None:
        while True:
            taken.append(await gate.take(receive.receive))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(taker)
        await send.send(1)
        await trio.sleep(0.1)
        assert taken == [1]
        assert gate.pause() is True and gate.pause() is False
        await send.send(2)
        await trio.sleep(10)
        assert taken == [1]  # nothing taken while paused, even by a task already waiting
        stats = gate.statistics()
        assert stats.paused and stats.pauses == 1 and stats.waiting == 1 and stats.paused_at
        assert gate.resume() is True and gate.resume() is False
        await trio.sleep(0.1)
        assert taken == [1, 2]  # the message waited, none lost
        assert not gate.statistics().paused
        nursery.cancel_scope.cancel()


async def test_wait_open_is_a_checkpoint_when_open():
    gate = IntakeGate()
    with trio.CancelScope() as scope:
        scope.cancel()
        await gate.wait_open()
        pytest.fail("wait_open did not checkpoint")


# -- the endpoint's commands -------------------------------------------------------


async def test_snapshot_restart_pause_and_dead_letters(actor_system: ActorSystem):
    await actor_system.spawn(tree())

    async def info() -> dict[str, object]:
        return {"queues": {"q": 3}}

    async def external(limit: int) -> list[str]:
        return ["from the broker"][:limit]

    endpoint = ControlEndpoint(actor_system, name="svc-0", info=info, dead_letters=external)
    answer = await endpoint.handle({"cmd": "snapshot"})
    assert answer["ok"], answer
    result: Any = msgspec.json.decode(msgspec.json.encode(answer["result"]))
    assert result["name"] == "svc-0" and result["pid"] == os.getpid()
    paths = {a["path"] for a in result["snapshot"]["actors"]}
    assert paths == {"svc", "svc/a", "svc/b"}
    assert result["info"] == {"queues": {"q": 3}}
    assert result["intake"]["paused"] is False

    answer = await endpoint.handle({"cmd": "restart", "path": "svc/a"})
    assert answer["ok"], answer
    await wait_for_state(actor_system, "svc/a", ActorState.RUNNING, restarts=1)
    info_a = actor_system.lookup("svc/a").statistics()
    assert info_a.restarts == 1 and info_a.last_error is not None
    assert "operator" in info_a.last_error.message
    assert actor_system.lookup("svc/b").statistics().restarts == 0

    assert (await endpoint.handle({"cmd": "restart", "path": "svc/nope"})) == {
        "ok": False,
        "error": "no actor at 'svc/nope'",
    }
    assert not (await endpoint.handle({"cmd": "restart"}))["ok"]

    assert (await endpoint.handle({"cmd": "pause"}))["result"]["changed"] is True
    assert actor_system.intake.paused
    assert (await endpoint.handle({"cmd": "pause"}))["result"]["changed"] is False
    assert (await endpoint.handle({"cmd": "resume"}))["result"]["changed"] is True
    assert not actor_system.intake.paused

    actor_system.dead_letters.publish("svc/gone", Ping(), "actor stopped")
    answer = await endpoint.handle({"cmd": "dead_letters", "limit": 5})
    letters: Any = answer["result"]
    assert letters["count"] == 1 and letters["recent"][0].path == "svc/gone"
    assert letters["external"] == ["from the broker"]

    unknown = await endpoint.handle({"cmd": "format-disk"})
    assert not unknown["ok"] and "unknown command" in str(unknown["error"])


# -- transports ---------------------------------------------------------------------


async def test_unix_socket_is_0600_serves_and_is_removed(
    actor_system: ActorSystem, short_dir: Path
):
    await actor_system.spawn(tree())
    path = short_dir / "svc.sock"
    endpoint = ControlEndpoint(actor_system)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve_control_unix, endpoint, path)
        assert bound == str(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, oct(mode)
        async with await ControlClient.connect_unix(path) as client:
            snap = await client.call("snapshot")
            assert {a["path"] for a in snap["snapshot"]["actors"]} >= {"svc/a", "svc/b"}
            assert (await client.call("ping"))[
                "pid"
            ] == os.getpid()  # several requests, one connection
            with pytest.raises(ControlError, match="no actor"):
                await client.call("restart", path="svc/zzz")
            # a bad line is answered, and the connection stays usable
            await client.stream.send_all(b"not json\n")
            assert not (await client._lines.next_line() or b"").startswith(b'{"ok":true')
            assert await client.call("commands")
        # a second endpoint cannot take a live socket
        with pytest.raises(OSError, match="already listens"):
            await nursery.start(serve_control_unix, endpoint, path)
        nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_a_stale_socket_is_replaced(actor_system: ActorSystem, short_dir: Path):
    import socket

    path = short_dir / "svc.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: a process that died
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control_unix, ControlEndpoint(actor_system), path)
        async with await ControlClient.connect_unix(path) as client:
            assert await client.call("ping")
        nursery.cancel_scope.cancel()


async def test_tcp_needs_the_token(actor_system: ActorSystem):
    endpoint = ControlEndpoint(actor_system)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_control_tcp, endpoint, "127.0.0.1", 0, "s3cret-token")
        async with await ControlClient.connect_tcp("127.0.0.1", port, "s3cret-token") as good:
            assert (await good.call("ping"))["pid"] == os.getpid()
        for token in ("wrong", ""):
            async with await ControlClient.connect_tcp("127.0.0.1", port, token) as bad:
                with pytest.raises(ControlRefused, match="refused"):
                    await bad.call("snapshot")
                # and the connection is closed: nothing more is read from it
                assert await bad.stream.receive_some(10) == b""
        # no token field at all
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b'{"cmd": "snapshot"}\n')
        answer = json.loads(await stream.receive_some(1000))
        assert answer == {"ok": False, "error": "refused: bad or missing token"}
        assert await stream.receive_some(10) == b""
        await stream.aclose()
        nursery.cancel_scope.cancel()
    with pytest.raises(ValueError):
        await serve_control_tcp(endpoint, "127.0.0.1", 0, "")


# -- the consumer obeys the gate -------------------------------------------------------


class Recorder(Actor[SendJob]):
    accepts: ClassVar[tuple[type, ...]] = (SendJob,)
    got: ClassVar[list[str]] = []

    async def receive(self, msg: SendJob) -> None:
        Recorder.got.append(msg.event.event_id)
        await msg.delivery.ack()


async def test_paused_consumer_takes_nothing_until_resumed(
    actor_system: ActorSystem, autojump_clock
):
    Recorder.got = []
    bus = MemoryBus(100)
    spec = SupervisorSpec(
        "es",
        [
            SupervisorSpec("senders", [ChildSpec("sender-0", Recorder)]),
            ChildSpec("consumer", Consumer, args=(bus, "es", 1)),
        ],
    )
    await actor_system.spawn(spec)
    await bus.publish_send(EmailSendEvent(event_id="e1", recipient="a@example.com", template="t"))
    await trio.sleep(1)
    assert Recorder.got == ["e1"]
    actor_system.intake.pause()
    await bus.publish_send(EmailSendEvent(event_id="e2", recipient="a@example.com", template="t"))
    await trio.sleep(30)
    assert Recorder.got == ["e1"]
    assert bus.depths()["send"] == 1  # still on the bus
    extra = actor_system.lookup("es/consumer").statistics().extra
    assert extra is not None and extra["paused"] is True and extra["taken"] == 1
    actor_system.intake.resume()
    await trio.sleep(1)
    assert Recorder.got == ["e1", "e2"]
    assert actor_system.lookup("es/consumer").statistics().extra["paused"] is False  # type: ignore[index]


# -- metrics --------------------------------------------------------------------------


def _samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


async def test_metrics_count_edges_and_read_the_snapshot_at_scrape(actor_system: ActorSystem):
    await actor_system.spawn(
        SupervisorSpec(
            "es", [ChildSpec("throttler", Throttler, args=(1.0, 1, {"slow.example": 0.5}))]
        )
    )
    throttler = actor_system.lookup("es/throttler")
    await throttler.ask(Acquire("slow.example"))
    with trio.move_on_after(0.05):
        await throttler.ask(Acquire("slow.example"))  # must wait: counted as a throttle wait

    metrics = EmailMetrics()
    bus = instrument(metrics, MemoryBus(100))
    await bus.publish_send(EmailSendEvent(event_id="e1", recipient="a@x.org", template="t"))
    for status, latency in ((Status.SENT, 250.0), (Status.SENT, 40.0), (Status.RETRYING, None)):
        await bus.publish_status(EmailStatusEvent(event_id="e1", status=status, latency_ms=latency))
    await bus.publish_raw("status", b"{}")
    delivery = await bus.next_send()
    await delivery.reject("bad")  # one dead letter on the in-process bus

    class FakeProvider:
        name = "fake"

        async def send(self, email: object) -> SendResult:
            await trio.lowlevel.checkpoint()
            return SendResult(provider="fake", ok=False, code=451, reply="try later")

    provider = instrument(metrics, FakeProvider())
    await provider.send(object())
    assert provider.name == "fake"  # everything else is delegated

    ops = Operations(actor_system, _config(), "embedded", bus=bus, metrics=metrics)
    metrics.registry.register(
        SystemCollector("embedded", ops.observe, trio.lowlevel.current_trio_token())
    )
    # A worker does not export the broker's queues: integration does, once for everyone.
    worker = Operations(actor_system, _config(), "email-server", bus=bus, worker=0)
    assert (await worker.observe()).queues is None
    text = (await trio.to_thread.run_sync(generate_latest, metrics.registry)).decode()
    s = _samples(text)

    def value(name: str, **labels: str) -> float:
        found = [x.value for x in s[name] if all(x.labels.get(k) == v for k, v in labels.items())]
        assert found, f"no {name} {labels} in\n{text}"
        return float(sum(found))

    assert value("mailactors_emails_total", component="auth", status="PENDING") == 1
    assert value("mailactors_emails_total", component="email-server", status="SENT") == 2
    assert value("mailactors_emails_total", component="email-server", status="FAILED") == 0
    assert value("mailactors_retries_total") == 1
    assert value("mailactors_request_to_sent_seconds_count") == 2
    assert value("mailactors_request_to_sent_seconds_bucket", le="0.1") == 1
    assert value("mailactors_provider_replies_total", provider="fake", code_class="4xx") == 1
    assert value("mailactors_mailbox_capacity", path="es/throttler") == 1024
    assert value("mailactors_actor_restarts_total", path="es/throttler") == 0
    assert value("mailactors_throttle_waits_total", path="es/throttler") == 1
    assert value("mailactors_throttle_tokens", bucket="slow.example") < 0
    assert value("mailactors_intake_paused") == 0
    assert value("mailactors_queue_depth", queue="status") == 4  # 3 statuses + 1 raw
    assert value("mailactors_queue_depth", queue="dead") == 1  # the dead letters: no dlq_size
    assert "mailactors_dlq_size" not in s and not any(n.endswith("_created") for n in s)
    assert value("mailactors_intake_paused", process="embedded") == 0
    assert value("mailactors_dead_letters_total") == 0


def test_code_class():
    assert code_class(SendResult(provider="smtp", ok=True, code=250)) == "2xx"
    assert code_class(SendResult(provider="smtp", ok=False, code=550)) == "5xx"
    assert code_class(SendResult(provider="maildir", ok=True)) == "2xx"
    assert code_class(SendResult(provider="smtp", ok=False)) == "error"


def test_instance_ports_never_collide():
    ports = [
        instance_port(9100, "integration", None),
        instance_port(9100, "auth", None),
        *(instance_port(9100, "email-server", i) for i in range(4)),
    ]
    assert len(set(ports)) == len(ports) and min(ports) == 9100
    assert instance_port(0, "auth", None) == 0  # 0 stays off


def _config() -> Any:
    from config import load_config

    return load_config("embedded", env={})


# -- redaction ----------------------------------------------------------------------


def test_redaction_hides_url_passwords_bearer_tokens_and_registered_secrets():
    add_secrets(["hunter2-smtp", 'quo"te-secret'])
    line = redact(
        "connect amqp://mailer:Pa55word@rabbit:5672/ failed; "
        "headers {'authorization': 'Bearer abc.def-123'}; smtp login hunter2-smtp rejected"
    )
    assert "Pa55word" not in line and "mailer:***@rabbit" in line
    assert "abc.def-123" not in line and "Bearer ***" in line
    assert "hunter2-smtp" not in line
    record = logging.makeLogRecord({"msg": "json: %s", "args": ('quo"te-secret',), "levelno": 20})
    from actors.telemetry.logs import JsonFormatter

    out = RedactingFormatter(JsonFormatter()).format(record)
    assert "quo" not in out and json.loads(out)["msg"] == "json: ***"


# -- the console's rendering -----------------------------------------------------------


def test_console_matches_instances_and_renders_a_snapshot(tmp_path: Path):
    assert matches("email-server-0", "email-server") and matches("email-server", "email-server")
    assert not matches("email-server-0", "email") and not matches("auth", "email-server")
    assert discover(tmp_path / "nothing") == []
    now = 1_700_000_000.0
    actor = {
        "path": "es/throttler", "kind": "Throttler", "state": "running", "mailbox_depth": 3,
        "mailbox_capacity": 1024, "processed": 10, "failures": 1, "restarts": 1,
        "last_error": {"type": "InjectedCrash", "message": "restarted by an operator", "at": now},
        "uptime": 1.0,
        "extra": {"buckets": {"provider": {"rate": 5, "burst": 10, "tokens": -1.5, "waiting": 2}},
                  "waits": 7},
    }
    answer = {
        "name": "email-server-0", "pid": 42,
        "snapshot": {"system": "email-server", "taken_at": now, "dead_letters": 0,
                     "actors": [{**actor, "path": "es", "kind": "supervisor", "mailbox_capacity": 0,
                                 "mailbox_depth": 0, "extra": None, "last_error": None}, actor]},
        "intake": {"paused": True},
        "info": {"queues": {"email.send": 5, "email.dead": 2}, "dead_letter_queue": "email.dead"},
    }
    rates = Rates()
    out = io.StringIO()
    console = Console(file=out, width=180, force_terminal=False)
    console.print(render({"email-server-0": answer}, {"auth": "permission denied"}, rates, "/run"))
    later = {
        **answer,
        "snapshot": {
            **answer["snapshot"],
            "taken_at": now + 2,
            "actors": [answer["snapshot"]["actors"][0], {**actor, "processed": 30}],
        },
    }
    console.print(render({"email-server-0": later}, {}, rates, "/run"))
    text = out.getvalue()
    for expected in ("email-server-0", "throttler", "INTAKE PAUSED", "InjectedCrash", "3/1024",
                     "provider", "email.dead", "permission denied", "10.0"):
        assert expected in text, (expected, text)


# -- progress bars and batch files ------------------------------------------------------


def test_progress_bars_draw_to_their_console():
    from actors.ops.progress import progress_bar, progress_display

    out = io.StringIO()
    with progress_bar(
        "sending", total=3, unit="emails", console=Console(file=out, width=120)
    ) as bar:
        for _ in range(3):
            bar.advance()
        bar.note("1 failed")
    assert bar.completed == 3
    assert "sending" in out.getvalue() and "3/3" in out.getvalue() and "1 failed" in out.getvalue()
    quiet = io.StringIO()
    with progress_display(console=Console(file=quiet), disable=True) as display:
        display.add("x", total=1).advance()
    assert quiet.getvalue() == ""


def test_batch_lines_are_checked_one_by_one(tmp_path: Path):
    from actors.ops.send_batch import read_batch

    path = tmp_path / "batch.jsonl"
    path.write_text(
        '{"to": "a@example.com", "template": "welcome", "variables": {"name": "A"}, "key": "k1"}\n'
        "\n"
        '{"recipient": "b@example.com", "template": "welcome", "subject": "Hi"}\n'
        "not json\n"
        '{"to": "c@example.com"}\n'
        '{"to": "d@example.com", "template": "welcome", "colour": "red"}\n'
    )
    items = dict(read_batch(path))
    assert items[1] == {"recipient": "a@example.com", "template": "welcome",
                        "variables": {"name": "A"}, "category": "transactional",
                        "idempotency_key": "k1"}
    assert items[3]["subject"] == "Hi" and items[3]["recipient"] == "b@example.com"
    assert "not JSON" in str(items[4])
    assert "template: missing" in str(items[5])
    assert "unknown field 'colour'" in str(items[6])
