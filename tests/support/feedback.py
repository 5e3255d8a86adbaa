"""Helpers for the feedback tests: the bounce samples, a sink that records what it is given."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import aiosmtplib
import trio

from actors.feedback import Feedback, FeedbackSink, RecipientHandler, inbound_smtp_server
from config import Config, load_config
from runtime import ActorSystem, current_edge, open_actor_system, open_asyncio_edge

DATA = Path(__file__).resolve().parent.parent / "feedback" / "data"
SAMPLES = sorted(p.stem for p in DATA.glob("*.eml"))


def sample(name: str, event_id: str, verp: str) -> bytes:
    """The sample ``name`` (tests/feedback/data/<name>.eml) about ``event_id``, sent to ``verp``."""
    raw = (DATA / f"{name}.eml").read_bytes()
    return raw.replace(b"{{EVENT_ID}}", event_id.encode()).replace(b"{{VERP}}", verp.encode())


class RecordingSink:
    """A FeedbackSink that keeps what it is given; ``fail`` makes the next reports raise."""

    def __init__(self) -> None:
        self.records: list[Feedback] = []
        self.fail = 0  # how many of the next report() calls raise
        self.calls = 0
        self._changed = trio.Event()

    async def report(self, feedback: Feedback) -> None:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        if self.fail > 0:
            self.fail -= 1
            raise RuntimeError("the sink is down (test)")
        self.records.append(feedback)
        self._changed.set()
        self._changed = trio.Event()


KEY = "feedback-test-key-0123456789abcdef"
DOMAIN = "bounce.mailactors.test"


def bounces_config(tmp_path: Path, **fields: object) -> Config:
    """The embedded profile with ``[bounces]`` on: a key file, loopback, a free port."""
    key_file = tmp_path / "verp-key"
    key_file.write_text(KEY + "\n")
    section = {"enabled": True, "domain": DOMAIN, "secret_file": str(key_file),
               "host": "127.0.0.1", "port": 0, **fields}  # fmt: skip
    return load_config("embedded", env={}, overrides={"bounces": section})


@asynccontextmanager
async def running_inbound(
    config: Config, sink: FeedbackSink, handlers: Mapping[str, RecipientHandler] | None = None
) -> AsyncIterator[tuple[ActorSystem, int]]:
    """The inbound SMTP endpoint in an actor system of its own; yields it and its port."""
    spec = inbound_smtp_server(config, sink, handlers)
    assert spec is not None
    async with open_asyncio_edge(), open_actor_system("feedback-test", shutdown=10.0) as system:
        await system.spawn(spec)
        listening = system.snapshot().by_path()["inbound-smtp"].extra["listening"]
        yield system, int(listening[0].rpartition(":")[2])


def inbound_counts(system: ActorSystem) -> dict[str, int]:
    """The inbound endpoint's counters, as its actor reports them (and metrics export them)."""
    counts = system.snapshot().by_path()["inbound-smtp"].extra["inbound_smtp"]
    assert isinstance(counts, dict)
    return counts


async def send(port: int, rcpt: str, data: bytes, *, sender: str = "") -> tuple[int, str]:
    """One message by SMTP (MAIL FROM:<> as an MTA sends a bounce); the final reply."""

    async def go() -> tuple[int, str]:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=20)
        await client.connect()
        try:
            await client.mail(sender)
            code, text = await client.rcpt(rcpt)
            if code >= 300:
                return code, text
            response = await client.data(data)
            return response.code, response.message
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
        finally:
            client.close()

    return await current_edge().run(go)


async def declared_size(port: int, rcpt: str) -> int:
    """MAIL FROM:<> SIZE=<too big>: the reply code (refused before any data is sent)."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=20)
    await client.connect()
    try:
        await client.mail("", options=["SIZE=999999999"])
        return 250
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code
    finally:
        client.close()
