"""``supervisor.py soak``: the distributed profile under faults, and every email accounted for.

    python supervisor.py soak --emails 2000 [--workers 2] [--faults all] [--rate 50]

It runs ``supervisor.py up --profile distributed`` as a child (its own queue,
exchange and index names, its own ports and data directory, so it disturbs
nothing else on the broker), against an aiosmtpd server in this process that
fails a share of the messages on purpose, and finds or starts RabbitMQ and an
Elasticsearch API as the tests do (``ELASTICSEARCH_URL``, else noida-db). It
requests ``--emails`` emails through auth's gRPC API at ``--rate`` per second
(each with an idempotency key; a request that fails because auth is down is
asked again with the same key), and meanwhile injects, at random moments at
least ``--fault-spacing`` seconds apart (the launcher tolerates five
restarts a minute):

* ``4xx=RATE`` / ``5xx=RATE``: that share of the messages is refused after DATA
  with a transient (451) or permanent (554) reply;
* ``kill=N``: an email-server process is killed with SIGKILL, N times;
* ``auth=N``: auth exits right after a save and before the publish, N times
  (``actors.auth.faults``): the outbox sweeper must find those emails;
* ``broker``: the local RabbitMQ is restarted once (``rabbitmqctl stop_app`` /
  ``start_app``), when the broker is this machine's;
* ``double=RATE``: that share of the emails has its EmailSendEvent published a
  second time, straight onto the send exchange (as a plain AMQP client would);
* ``accept=N``: an email-server exits right after the provider accepted an email
  and before its outcome is recorded (``actors.auth.faults``), N times: the claim
  it leaves is taken over, under ``--unknown-outcome`` (resend or fail);
* ``none``; ``all`` (default) =
  ``4xx=0.05,5xx=0.02,kill=2,auth=2,broker,double=0.05,accept=1``.

Integration sends every terminal status as a signed webhook to a receiver in this
process that refuses ``--webhook-fail-rate`` (default 10%) of the requests with 500;
each email's terminal status must still reach it (``webhooks`` in the report).

With ``--bounces RATE`` / ``--complaints RATE``, that share of the emails that end SENT
gets a hard bounce / a complaint back as an SES event over SNS, signed with a key made
for the run and POSTed to integration's HTTP endpoint (``actors.testing.sns``; the
certificate is served over HTTPS on loopback, the only host the run's configuration
allows); each must end BOUNCED / COMPLAINED, and a notification answered "try again"
is posted again, as SNS does.

Every email also goes to one of a few recipient domains, one of them limited by
``--domain-rate`` (default ``slow.example=10``), and addresses repeat, so that
a permanent refusal suppresses later emails to the same address.

When everything was requested and the faults are over it waits (``--deadline``
seconds at most) for every email to reach a terminal state, stops the
cluster, and reports: submitted, SENT, FAILED, SUPPRESSED, lost (no terminal
state by the deadline), duplicates (an eventId the SMTP server accepted more
than once; up to the number of claims of dead senders that were sent again
under ``resend`` they are the documented window, counted apart), FAILED without a
reason, SENT but never received, dead letters, the most emails any
limited domain received in one second, the claims taken over (and how many
of those were sent again under ``resend``: the most duplicates allowed), and
the window from provider acceptance to a durable outcome (p50/p99, from the
workers' reports). A progress bar runs on stderr; the last
line on stdout is one JSON object with those figures. Exit status 1 if any
email was lost, sent twice more often than claims were resent after their
owner died, FAILED without a reason, SENT without being received, a domain
limit was broken, or a terminal status never reached the webhook receiver.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from actors.auth.service import event_id_for
from actors.ops.client import positive_int
from actors.stores.claims import UNKNOWN_OUTCOME_REASON
from actors.testing import cluster as testing_cluster
from actors.testing.cluster import Cluster, delete_topology
from actors.testing.localservices import elasticsearch_service, rabbitmq_service

__all__ = [
    "SoakOptions",
    "main_soak",
    "parse_faults",
    "register",
    "run_soak",
]

_TERMINAL = ("SENT", "FAILED", "SUPPRESSED", "BOUNCED", "COMPLAINED", "DELIVERED", "DELAYED")
_NON_TERMINAL = ("PENDING", "SENDING", "RETRYING")


@dataclass
class Faults:
    transient: float = 0.0
    permanent: float = 0.0
    kills: int = 0
    auth_crashes: int = 0
    broker: bool = False
    doubles: float = 0.0
    accept_crashes: int = 0


def _flag(value: str) -> bool:
    return value.lower() not in ("0", "false", "no")


# --faults NAME[=VALUE]: the Faults attribute, how VALUE reads, VALUE when it is left out.
_FAULTS: dict[str, tuple[str, Callable[[str], object], str]] = {
    "4xx": ("transient", float, "0.05"),
    "5xx": ("permanent", float, "0.02"),
    "kill": ("kills", int, "2"),
    "auth": ("auth_crashes", int, "2"),
    "double": ("doubles", float, "0.05"),
    "accept": ("accept_crashes", int, "1"),
    "broker": ("broker", _flag, "yes"),
}


def parse_faults(text: str) -> Faults:
    """``all``, ``none`` or ``4xx=0.05,5xx=0.02,kill=2,auth=2,broker``."""
    if text.strip() == "all":
        text = "4xx=0.05,5xx=0.02,kill=2,auth=2,broker,double=0.05,accept=1"
    faults = Faults()
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part == "none":
            continue
        name, _, value = part.partition("=")
        try:
            if name not in _FAULTS:
                raise ValueError(f"unknown fault {name!r}")
            attribute, parse, default = _FAULTS[name]
            setattr(faults, attribute, parse(value or default))
        except ValueError as exc:
            raise ValueError(
                f"--faults: {exc} (in {part!r}; known: 4xx=RATE, 5xx=RATE, kill=N, auth=N, broker, "
                "double=RATE, accept=N, all, none)"
            ) from None
    if not (0 <= faults.transient <= 1 and 0 <= faults.permanent <= 1 and 0 <= faults.doubles <= 1):
        raise ValueError("--faults: 4xx, 5xx and double rates are between 0 and 1")
    return faults


@dataclass
class SoakOptions:
    emails: int = 300
    workers: int = 2
    faults: Faults = field(default_factory=Faults)
    rate: float = 50.0
    concurrency: int = 16
    deadline_s: float = 120.0
    fault_spacing_s: float = 13.0
    domain_rates: dict[str, float] = field(default_factory=lambda: {"slow.example": 10.0})
    seed: int = 0
    work_dir: Path | None = None
    keep: bool = False
    progress: bool = True
    unknown_outcome: str = "resend"
    webhook_fail_rate: float = 0.1  # the webhook receiver fails this share of requests
    bounces: float = 0.0  # share of SENT emails that get a hard bounce over SNS
    complaints: float = 0.0  # ... a complaint


@dataclass
class SoakResult:
    figures: dict[str, Any]
    ok: bool


# -- the cluster ----------------------------------------------------------------------------
# The harness is actors.testing.cluster's; here, only the soak's settings.


def cluster_env(
    work: Path, es_url: str, amqp_url: str, smtp_port: int, options: SoakOptions, crash_file: Path
) -> dict[str, str]:
    """``crash_file`` counts auth's injected crashes; ``accept-crashes`` beside it the email
    servers'."""
    p = f"soak.{uuid.uuid4().hex[:10]}"
    return testing_cluster.cluster_env(
        work,
        es_url,
        amqp_url,
        smtp_port,
        prefix="soak",
        sender="soak@mailactors.test",
        extra={
            "MAILACTORS__SERVICE__LOG_LEVEL": "WARNING",
            "MAILACTORS__SERVICE__RUN_DIR": str(work / "run"),
            "MAILACTORS__RETRY__MAX_DELAY_S": "5",
            "MAILACTORS__SWEEPER__PENDING_AGE_S": "20",
            "MAILACTORS__SWEEPER__INTERVAL_S": "5",
            "MAILACTORS__THROTTLE__PER_DOMAIN": json.dumps(options.domain_rates),
            "MAILACTORS_FAULT_CRASH_AFTER_SAVE": str(crash_file),
            "MAILACTORS_FAULT_CRASH_EVERY": "1",
            "MAILACTORS_FAULT_CRASH_AFTER_ACCEPT": str(crash_file.with_name("accept-crashes")),
            "MAILACTORS_FAULT_CRASH_ACCEPT_EVERY": "1",
            "MAILACTORS__EMAIL_SERVER__CLAIMS_INDEX": f"claims-{p.replace('.', '-')}",
            "MAILACTORS__EMAIL_SERVER__UNKNOWN_OUTCOME": options.unknown_outcome,
        },
    )


# -- the client -----------------------------------------------------------------------------


class Client:
    """gRPC calls from the soak, through the asyncio edge; one channel per port."""

    def __init__(self, edge: Any, auth_port: int) -> None:
        self.edge = edge
        self.auth_port = auth_port
        self.channel: Any = None
        self.lock = trio.Lock()

    async def _channel(self) -> Any:
        """One channel for every request: grpclib reconnects it when auth comes back."""
        from grpclib.client import Channel

        async with self.lock:
            if self.channel is None:

                async def make() -> Any:
                    return Channel("127.0.0.1", self.auth_port)

                self.channel = await self.edge.run(make)
            return self.channel

    async def close(self) -> None:
        if self.channel is not None:
            channel, self.channel = self.channel, None

            async def close() -> None:
                channel.close()

            await self.edge.run(close)

    async def request(self, recipient: str, key: str) -> str:
        from actors.grpc.convert import variables_to_struct
        from protos import email_grpc, email_pb2

        req = email_pb2.RequestEmailRequest(
            recipient=recipient,
            template="verification",
            variables=variables_to_struct({"name": "Ada", "code": key[-6:], "expires_minutes": 5}),
            idempotency_key=key,
        )
        channel = await self._channel()

        async def call() -> Any:
            return await email_grpc.AuthServiceStub(channel).RequestEmail(req, timeout=30)

        reply = await self.edge.run(call)
        return str(reply.event_id)


# -- the run --------------------------------------------------------------------------------


@dataclass
class _State:
    submitted: dict[str, str] = field(default_factory=dict)  # eventId -> recipient
    request_retries: int = 0
    kills: list[float] = field(default_factory=list)  # time.monotonic() of each SIGKILL
    killed_pids: set[int] = field(default_factory=set)
    auth_crashes: int = 0
    accept_crashes: int = 0
    doubles: int = 0
    broker_restarts: int = 0
    fault_log: list[str] = field(default_factory=list)
    terminal: int = 0
    feedback_sent: dict[str, str] = field(default_factory=dict)  # eventId -> expected status
    feedback_retries: int = 0


def _recipient(i: int, n: int, rng: random.Random, domains: list[str]) -> str:
    domain = domains[i % len(domains)]
    pool = max(1, n // 3)  # addresses repeat: a bounce suppresses later emails
    return f"user{rng.randrange(pool)}@{domain}"


async def _submit(
    client: Client,
    options: SoakOptions,
    state: _State,
    run_id: str,
    on_done: Callable[[], None],
    double: Callable[[str, str, str], Awaitable[None]] | None = None,
) -> None:
    rng = random.Random(options.seed)
    domains = [*options.domain_rates, "example.com", "example.org"]
    limiter = trio.Semaphore(options.concurrency)
    start = trio.current_time()

    async def one(i: int, recipient: str) -> None:
        key = f"{run_id}-{i}"
        delay = 0.2
        try:
            while True:
                try:
                    event_id = await client.request(recipient, key)
                    break
                except Exception as exc:  # auth down (crash, restart): ask again, same key
                    from grpclib import GRPCError
                    from grpclib import Status as GrpcStatus

                    if isinstance(exc, GRPCError) and exc.status is GrpcStatus.INVALID_ARGUMENT:
                        raise
                    state.request_retries += 1
                    await trio.sleep(delay * rng.uniform(0.8, 1.2))
                    delay = min(2.0, delay * 2)
            assert event_id == event_id_for(key)
            state.submitted[event_id] = recipient
            if double is not None and rng.random() < options.faults.doubles:
                await double(event_id, recipient, key)  # a second copy, straight onto the bus
                state.doubles += 1
            on_done()
        finally:
            limiter.release()

    async with trio.open_nursery() as nursery:
        for i in range(options.emails):
            await trio.sleep_until(start + i / options.rate)
            await limiter.acquire()
            nursery.start_soon(one, i, _recipient(i, options.emails, rng, domains))


def _fault_schedule(
    options: SoakOptions, duration: float, rng: random.Random
) -> list[tuple[float, str]]:
    kinds = (
        ["kill"] * options.faults.kills
        + ["auth"] * options.faults.auth_crashes
        + ["accept"] * options.faults.accept_crashes
    )
    if options.faults.broker:
        kinds.append("broker")
    rng.shuffle(kinds)
    if not kinds:
        return []
    spacing = options.fault_spacing_s
    slack = max(0.0, duration * 0.85 - spacing * len(kinds))
    cuts = sorted(rng.uniform(0, slack) for _ in kinds)
    return [
        (2.0 + cut + k * spacing, kind)
        for k, (cut, kind) in enumerate(zip(cuts, kinds, strict=True))
    ]


async def _inject(
    cluster: Cluster,
    schedule: list[tuple[float, str]],
    state: _State,
    crash_file: Path,
    amqp_url: str,
    rng: random.Random,
) -> None:
    start = trio.current_time()
    for at, kind in schedule:
        await trio.sleep_until(start + at)
        if kind == "kill":
            # only a worker that is up (said it was ready since its last kill)
            await cluster.wait_for(lambda: bool(_live_workers(cluster, state)), 60)
            name, pid = rng.choice(sorted(_live_workers(cluster, state).items()))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                state.kills.append(time.monotonic())
                state.killed_pids.add(pid)
                state.fault_log.append(f"SIGKILL {name} (pid {pid})")
        elif kind == "accept":
            # the next email accepted by any worker: its worker exits before recording it
            await trio.Path(crash_file.with_name("accept-crashes")).write_text("1")
            state.accept_crashes += 1
            state.kills.append(time.monotonic())
            state.fault_log.append("email-server crash after an acceptance")
        elif kind == "auth":
            await trio.Path(crash_file).write_text("1")  # auth exits after its next save
            state.auth_crashes += 1
            state.fault_log.append("auth crash after a save")
        elif kind == "broker":
            if not _local_broker(amqp_url):
                state.fault_log.append("broker restart skipped (not this machine's broker)")
                continue
            ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
            try:
                for step in ("stop_app", "start_app", "await_startup"):
                    await trio.run_process(
                        [ctl, "-q", step], capture_stdout=True, capture_stderr=True
                    )
                    if step == "stop_app":
                        await trio.sleep(2)
            except (OSError, subprocess.CalledProcessError) as exc:
                state.fault_log.append(f"broker restart failed: {exc}")
                continue
            state.broker_restarts += 1
            state.fault_log.append("RabbitMQ restarted")


class _Copier:
    """Publishes second copies of send events, as a plain AMQP client would (double=RATE)."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus

    async def publish(self, event_id: str, recipient: str, key: str) -> None:
        from actors.domain.schema import EmailSendEvent

        event = EmailSendEvent(
            event_id=event_id,
            recipient=recipient,
            template="verification",
            variables={"name": "Ada", "code": key[-6:], "expires_minutes": 5},
        )
        with contextlib.suppress(Exception):  # the broker restarting: this copy is not needed
            await self.bus.publish_send(event)

    async def close(self) -> None:
        await self.bus.close()


async def _open_copier(env: dict[str, str]) -> _Copier:
    from actors.bus.rabbitmq import RabbitBus
    from config import load_config

    bus = RabbitBus(
        load_config("distributed", env=env).bus, role="tool", connection_name="soak-copier"
    )
    await bus.open()
    return _Copier(bus)


async def _workers_report(run_dir: Path) -> dict[str, Any]:
    """Each live email-server's claims counters and acceptance-to-record window."""
    from actors.ops.console import discover, fetch

    results, _ = await fetch(discover(run_dir, "email-server"))
    workers: dict[str, Any] = {}
    for name, answer in results.items():
        for actor in answer.get("snapshot", {}).get("actors", []):
            extra = actor.get("extra") or {}
            if actor.get("path", "").endswith("/senders/sender-0") and "window" in extra:
                workers.setdefault(name, {}).update(
                    window_ms=extra["window"], claims=extra.get("claims")
                )
            elif actor.get("path", "").endswith("/recorder"):
                workers.setdefault(name, {})["writes"] = extra  # batches, claims, outcomes, lost
    windows = [w["window_ms"] for w in workers.values() if (w.get("window_ms") or {}).get("count")]
    if not windows:
        return {"workers": workers}
    return {
        "workers": workers,
        "window_ms": {
            "p50": max(w["p50_ms"] for w in windows),
            "p99": max(w["p99_ms"] for w in windows),
            "samples": sum(w["count"] for w in windows),
        },
    }


def _live_workers(cluster: Cluster, state: _State) -> dict[str, int]:
    return {n: p for n, p in cluster.worker_pids().items() if p not in state.killed_pids}


def _local_broker(url: str) -> bool:
    host = re.sub(r"^amqps?://([^@]*@)?", "", url).split("/")[0].split(":")[0]
    return host in ("127.0.0.1", "localhost") and bool(
        shutil.which("rabbitmqctl") or Path("/usr/sbin/rabbitmqctl").exists()
    )


async def _terminal_count(store: Any) -> int:
    from actors.domain.edges import SearchQuery
    from actors.domain.schema import Status

    total = 0
    for status in _TERMINAL:
        page = await store.search(SearchQuery(status=Status(status), page_size=1))
        total += page.total
    return total


async def _feedback_pending(store: Any, state: _State) -> int:
    """Emails given a bounce or a complaint whose document does not show it yet."""
    pending = 0
    for event_id, expected in list(state.feedback_sent.items()):
        doc = await store.get(event_id)
        pending += doc is None or doc.status.value != expected
    return pending


async def _all_documents(store: Any, status: str) -> list[Any]:
    from actors.domain.edges import SearchQuery
    from actors.domain.schema import Status

    docs: list[Any] = []
    token = ""
    while True:
        page = await store.search(
            SearchQuery(status=Status(status), page_size=1000, page_token=token)
        )
        docs.extend(page.documents)
        token = page.next_page_token
        if not token:
            return docs


async def _dead_letters(edge: Any, env: dict[str, str]) -> tuple[int, list[str]]:
    from actors.bus.rabbitmq import RabbitBus
    from config import load_config

    config = load_config("distributed", env=env)
    bus = RabbitBus(config.bus, role="tool", connection_name="mailactors-soak")
    await bus.open()
    try:
        depth = (await bus.queue_depths()).get(config.bus.dead_letter_queue, 0)
        letters = await bus.dead_letters(20)
        return depth, sorted({d.reason for d in letters})
    finally:
        await bus.close()


def _max_per_second(times: list[float]) -> int:
    times = sorted(times)
    best = j = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


class _Feedback:
    """SES events over SNS for a share of the SENT emails (``--bounces``, ``--complaints``)."""

    def __init__(self, signer: Any, host: Any, http_port: int) -> None:
        self.signer = signer
        self.host = host
        self.url = f"http://127.0.0.1:{http_port}/feedback/ses"

    def env(self, ledger_index: str) -> dict[str, str]:
        from actors.testing.sns import TOPIC

        return {
            "MAILACTORS__HTTP__ENABLED": "true",
            "MAILACTORS__HTTP__PORT": self.url.split(":")[2].split("/")[0],
            "MAILACTORS__FEEDBACK__LEDGER_INDEX": ledger_index,
            "MAILACTORS__FEEDBACK__SES__ENABLED": "true",
            "MAILACTORS__FEEDBACK__SES__HOST_PATTERN": r"localhost:\d+",
            "MAILACTORS__FEEDBACK__SES__CA_FILE": self.host.ca,
            "MAILACTORS__FEEDBACK__SES__TOPIC_ARNS": json.dumps([TOPIC]),
        }

    async def run(self, store: Any, options: SoakOptions, state: _State) -> None:
        """For each email, once it ends: if SENT, maybe a bounce or a complaint, until applied."""
        import httpx

        from actors.testing.sns import ses_event, sns_notification

        rng = random.Random(options.seed + 1)
        limiter = trio.Semaphore(8)

        async def one(http: Any, event_id: str, recipient: str, kind: str) -> None:
            async with limiter:
                while True:  # until it ends (the deadline bounds the whole soak)
                    doc = await store.get(event_id)
                    if doc is not None and doc.status.terminal:
                        break
                    await trio.sleep(0.5)
                if doc.status.value != "SENT":
                    return  # FAILED or SUPPRESSED: nothing came back
                body = json.dumps(sns_notification(
                    ses_event(kind, event_id, recipient, domain="mailactors.test"),
                    self.host.cert_url, self.signer, message_id=f"soak-{event_id}",
                ))  # fmt: skip
                state.feedback_sent[event_id] = "BOUNCED" if kind == "Bounce" else "COMPLAINED"
                delay = 0.2
                while True:  # SNS retries what is not answered 2xx: so does the soak
                    with contextlib.suppress(httpx.HTTPError):
                        reply = await http.post(self.url, content=body)
                        if reply.status_code == 200:
                            return
                    state.feedback_retries += 1
                    await trio.sleep(delay)
                    delay = min(2.0, delay * 2)

        seen: set[str] = set()
        async with httpx.AsyncClient(timeout=30) as http, trio.open_nursery() as nursery:
            while True:
                for event_id, recipient in list(state.submitted.items()):
                    if event_id in seen:
                        continue
                    seen.add(event_id)
                    draw = rng.random()
                    if draw < options.bounces:
                        nursery.start_soon(one, http, event_id, recipient, "Bounce")
                    elif draw < options.bounces + options.complaints:
                        nursery.start_soon(one, http, event_id, recipient, "Complaint")
                if len(seen) >= options.emails:
                    return
                await trio.sleep(0.5)


async def run_soak(options: SoakOptions, es_url: str, amqp_url: str) -> SoakResult:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from actors.stores.elasticsearch import ElasticsearchStore
    from actors.testing.fakesmtp import FaultServer
    from actors.testing.webhooks import delete_webhook_queues, open_receiver
    from runtime import open_asyncio_edge

    work = options.work_dir or Path(tempfile.mkdtemp(prefix="mailactors-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    crash_file = work / "auth-crashes"
    crash_file.write_text("0")
    crash_file.with_name("accept-crashes").write_text("0")
    rng = random.Random(options.seed)
    run_id = f"soak-{uuid.uuid4().hex[:8]}"
    state = _State()
    t_start = time.monotonic()
    smtp = FaultServer(
        transient_rate=options.faults.transient,
        permanent_rate=options.faults.permanent,
        seed=options.seed,
    )
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        disable=not options.progress,
    )
    hook_secret = secrets.token_hex(16)
    hook_prefix = f"{run_id}.webhooks"
    async with smtp, open_asyncio_edge() as edge, contextlib.AsyncExitStack() as stack:
        hooks = await stack.enter_async_context(
            open_receiver(hook_secret, fail_rate=options.webhook_fail_rate, seed=options.seed)
        )
        env = cluster_env(work, es_url, amqp_url, smtp.port, options, crash_file)
        env.update(_webhook_env(hooks.url, hook_secret, hook_prefix))
        feedback: _Feedback | None = None
        if options.bounces > 0 or options.complaints > 0:
            from actors.testing.localservices import free_port
            from actors.testing.sns import SnsSigner, open_sns_host

            signer = SnsSigner()
            host = await stack.enter_async_context(open_sns_host(work / "sns", signer))
            feedback = _Feedback(signer, host, free_port())
            env.update(feedback.env(f"feedback-{run_id}"))
        feedback_done = trio.Event()
        store = ElasticsearchStore(es_url, env["MAILACTORS__STORE__INDEX"])
        # The topology outlives the cluster: the dead letters are read after it stopped.
        cluster = Cluster(env, options.workers, work / "cluster.log", keep_topology=True)
        submit_s = options.emails / options.rate
        n_faults = options.faults.kills + options.faults.auth_crashes + int(options.faults.broker)
        duration = max(submit_s, (n_faults + 1) * options.fault_spacing_s)
        schedule = _fault_schedule(options, duration, rng)
        if submit_s < duration:  # spread the requests over the faults
            options.rate = options.emails / duration
        hard_limit = duration + options.deadline_s + 300.0  # a broker that never comes back
        aborted = False
        deadline_passed = False
        final: dict[str, list[Any]] = {status: [] for status in (*_TERMINAL, *_NON_TERMINAL)}
        dead = -1
        reasons: list[str] = []
        workers_report: dict[str, Any] = {}
        try:
            with progress:
                submitted = progress.add_task(
                    "submitted", total=options.emails, note="starting the cluster"
                )
                terminal = progress.add_task("terminal", total=options.emails, note="")
                async with cluster.running():
                    await store.open()
                    client = Client(edge, int(env["MAILACTORS__GRPC__AUTH_PORT"]))
                    copier = await _open_copier(env) if options.faults.doubles > 0 else None
                    try:
                        with trio.move_on_after(hard_limit) as hard:
                            async with trio.open_nursery() as nursery:
                                progress.update(
                                    submitted, note=f"faults: {len(schedule)} scheduled"
                                )

                                async def watch_terminal(
                                    task_status: Any = trio.TASK_STATUS_IGNORED,
                                ) -> None:
                                    task_status.started()
                                    while True:
                                        with contextlib.suppress(Exception):
                                            state.terminal = await _terminal_count(store)
                                        progress.update(
                                            terminal,
                                            completed=min(state.terminal, options.emails),
                                            note="; ".join(state.fault_log[-2:]),
                                        )
                                        await trio.sleep(1.0)

                                await nursery.start(watch_terminal)
                                if feedback is not None:

                                    async def post_feedback() -> None:
                                        await feedback.run(store, options, state)
                                        feedback_done.set()

                                    nursery.start_soon(post_feedback)
                                else:
                                    feedback_done.set()
                                async with trio.open_nursery() as work_nursery:
                                    work_nursery.start_soon(
                                        _inject, cluster, schedule, state, crash_file, amqp_url, rng
                                    )
                                    await _submit(
                                        client,
                                        options,
                                        state,
                                        run_id,
                                        lambda: progress.advance(submitted),
                                        copier.publish if copier is not None else None,
                                    )
                                progress.update(
                                    submitted, note="all requested; waiting for terminal states"
                                )
                                with trio.move_on_after(options.deadline_s) as waited:
                                    while True:
                                        if (
                                            state.terminal >= len(state.submitted)
                                            and feedback_done.is_set()
                                            and not await _feedback_pending(store, state)
                                        ):
                                            break
                                        await trio.sleep(0.5)
                                deadline_passed = waited.cancelled_caught
                                nursery.cancel_scope.cancel()
                        aborted = hard.cancelled_caught
                        with trio.move_on_after(20), contextlib.suppress(Exception):
                            workers_report = await _workers_report(
                                Path(env["MAILACTORS__SERVICE__RUN_DIR"])
                            )
                        with trio.move_on_after(120):
                            for status in final:
                                final[status] = await _all_documents(store, status)
                        # Every terminal status also reaches the webhook receiver, its
                        # refusals retried: wait (bounded) for the stragglers.
                        with trio.move_on_after(60):
                            while _webhooks_missing(final, hooks):
                                hooks.changed = trio.Event()
                                with trio.move_on_after(1.0):
                                    await hooks.changed.wait()
                    finally:
                        await client.close()
                        await store.close()
                        if copier is not None:
                            await copier.close()
                with contextlib.suppress(Exception), trio.move_on_after(60):
                    dead, reasons = await _dead_letters(edge, env)
        finally:
            if not options.keep:
                with trio.move_on_after(60, shield=True):
                    with contextlib.suppress(Exception):
                        await trio.to_thread.run_sync(delete_topology, env)
                    with contextlib.suppress(Exception):
                        await delete_webhook_queues(edge, amqp_url, hook_prefix, ["soak"])
                    with contextlib.suppress(Exception):
                        import httpx

                        async with httpx.AsyncClient() as http:
                            await http.delete(f"{es_url}/{env['MAILACTORS__STORE__INDEX']}")
                            if feedback is not None:
                                ledger = env["MAILACTORS__FEEDBACK__LEDGER_INDEX"]
                                await http.delete(f"{es_url}/{ledger}")
    received = smtp.messages()
    by_event: dict[str, list[float]] = {}
    for m in received:
        if (event_id := m.event_id) is not None:
            by_event.setdefault(event_id, []).append(m.at)
    duplicates = sum(len(ts) - 1 for ts in by_event.values())
    # The one window left: a claim whose owner died after contacting the provider and
    # was sent again by whoever took it over (policy resend). Counted from the workers' logs.
    log_text = "\n".join(cluster.lines)
    claims = {
        "taken_over": log_text.count("took over "),
        "unknown_resent": log_text.count("outcome unknown, sending again (resend)"),
        "unknown_failed": log_text.count(UNKNOWN_OUTCOME_REASON),
        "found_at_provider": log_text.count("the provider has it"),
    }
    in_window = min(duplicates, claims["unknown_resent"])
    status_of = {d.event_id: status for status, docs in final.items() for d in docs}
    ids = set(state.submitted)
    terminal_ids = {i for i in ids if status_of.get(i) in _TERMINAL}
    lost = sorted(ids - terminal_ids)
    failed_no_reason = [d.event_id for d in final["FAILED"] if not (d.error or "").strip()]
    feedback_not_applied = sorted(
        i for i, expected in state.feedback_sent.items() if status_of.get(i) != expected
    )
    sent_not_received = [d.event_id for d in final["SENT"] if d.event_id not in by_event]
    domain_max = {}
    for domain in options.domain_rates:
        times = [m.at for m in received if any(r.endswith("@" + domain) for r in m.rcpt_tos)]
        domain_max[domain] = _max_per_second(times)
    over_limit = {d: n for d, n in domain_max.items() if n > int(options.domain_rates[d] + 1e-9)}
    figures: dict[str, Any] = {
        "emails": options.emails,
        "workers": options.workers,
        "seconds": round(time.monotonic() - t_start, 1),
        "submitted": len(ids),
        "sent": sum(1 for i in ids if status_of.get(i) == "SENT"),
        "failed": sum(1 for i in ids if status_of.get(i) == "FAILED"),
        "suppressed": sum(1 for i in ids if status_of.get(i) == "SUPPRESSED"),
        "bounced": sum(1 for i in ids if status_of.get(i) == "BOUNCED"),
        "complained": sum(1 for i in ids if status_of.get(i) == "COMPLAINED"),
        "feedback": {
            "bounce_rate": options.bounces,
            "complaint_rate": options.complaints,
            "posted": len(state.feedback_sent),
            "retries": state.feedback_retries,
            "not_applied": len(feedback_not_applied),
        },
        "lost": len(lost),
        "duplicates": duplicates,
        "duplicates_in_window": in_window,
        "duplicates_beyond_window": duplicates - in_window,
        "failed_without_reason": len(failed_no_reason),
        "sent_not_received": len(sent_not_received),
        "dead_letters": dead,
        "domain_max_per_s": domain_max,
        "smtp_refusals": smtp.failed,
        "request_retries": state.request_retries,
        "claims": claims,
        "window_ms": workers_report.get("window_ms"),
        "workers_report": workers_report.get("workers"),
        "unknown_outcome": options.unknown_outcome,
        "faults": {
            "sigkill_email_server": len(state.kills) - state.accept_crashes,
            "crash_after_accept": state.accept_crashes,
            "double_published": state.doubles,
            "auth_crash_after_save": state.auth_crashes,
            "broker_restarts": state.broker_restarts,
            "transient_rate": options.faults.transient,
            "permanent_rate": options.faults.permanent,
        },
        "deadline_passed": deadline_passed,
        "aborted": aborted,
        "work_dir": str(work),
    }
    hooks_missing = _webhooks_missing(final, hooks)
    figures["webhooks"] = {
        "terminal_events": len(hooks.order),
        "missing": len(hooks_missing),
        "refused_on_purpose": hooks.failed_on_purpose,
        "repeats": hooks.repeats,
        "bad_signatures": hooks.bad,
    }
    if hooks_missing:
        figures["webhooks"]["missing_examples"] = hooks_missing[:5]
    if lost:
        figures["lost_examples"] = [{"eventId": i, "status": status_of.get(i)} for i in lost[:5]]
    if reasons:
        figures["dead_letter_reasons"] = reasons
    if feedback_not_applied:
        figures["feedback_not_applied_examples"] = [
            {"eventId": i, "status": status_of.get(i)} for i in feedback_not_applied[:5]
        ]
    ok = (
        not aborted
        and not lost
        and duplicates == in_window
        and not failed_no_reason
        and not sent_not_received
        and not over_limit
        and not hooks_missing
        and not hooks.bad
        and not feedback_not_applied
    )
    if ok and not options.keep and options.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
        figures["work_dir"] = None
    return SoakResult(figures, ok)


# -- webhooks ---------------------------------------------------------------------------------


def _webhook_env(url: str, secret: str, prefix: str) -> dict[str, str]:
    """Integration sends every terminal status to the soak's receiver (one that fails 10%)."""
    endpoint = {"name": "soak", "url": url, "secret_env": "MAILACTORS_SOAK_WEBHOOK_SECRET",
                "statuses": sorted(_TERMINAL), "concurrency": 8}  # fmt: skip
    return {
        "MAILACTORS_SOAK_WEBHOOK_SECRET": secret,
        "MAILACTORS__WEBHOOKS__ENABLED": "true",
        "MAILACTORS__WEBHOOKS__ALLOW_PRIVATE": "true",  # the receiver is on loopback
        "MAILACTORS__WEBHOOKS__QUEUE_PREFIX": prefix,
        "MAILACTORS__WEBHOOKS__BASE_DELAY_S": "0.2",
        "MAILACTORS__WEBHOOKS__MAX_DELAY_S": "2",
        "MAILACTORS__WEBHOOKS__BREAKER_COOL_DOWN_S": "1",
        "MAILACTORS__WEBHOOKS__ENDPOINTS": json.dumps([endpoint]),
    }


def _webhooks_missing(final: dict[str, list[Any]], hooks: Any) -> list[str]:
    """Emails whose terminal status the receiver has not had (verified, once or more)."""
    got = {(b["eventId"], b["status"]) for b in hooks.order}
    return [
        d.event_id for status in _TERMINAL for d in final.get(status, ())
        if (d.event_id, status) not in got
    ]  # fmt: skip


# -- command line ---------------------------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``soak`` to supervisor.py's subcommands."""
    parser = commands.add_parser(
        "soak",
        help="run the distributed profile under faults and check every email's fate",
        description=__doc__,
    )
    parser.set_defaults(handler=main_soak)
    parser.add_argument(
        "--emails", type=positive_int, default=300, help="emails to request (default 300)"
    )
    parser.add_argument(
        "--workers", type=positive_int, default=2, help="email-server processes (default 2)"
    )
    parser.add_argument(
        "--faults", default="all", help="all | none | 4xx=R,5xx=R,kill=N,auth=N,broker"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument(
        "--concurrency", type=positive_int, default=16, help="requests in flight (default 16)"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds to wait, after the last request, for every email to end (default 60 + N/50)",
    )
    parser.add_argument(
        "--fault-spacing",
        type=float,
        default=13.0,
        help="least seconds between two injected faults (default 13)",
    )
    parser.add_argument(
        "--domain-rate",
        action="append",
        default=None,
        metavar="DOMAIN=RATE",
        help="a limited recipient domain (default slow.example=10)",
    )
    parser.add_argument(
        "--unknown-outcome",
        choices=("resend", "fail"),
        default="resend",
        help="the email servers' policy for a dead sender's claim (default resend)",
    )
    parser.add_argument(
        "--webhook-fail-rate",
        type=float,
        default=0.1,
        help="share of requests the webhook receiver refuses with 500 (default 0.1)",
    )
    parser.add_argument(
        "--bounces", type=float, default=0.0,
        help="share of SENT emails that get a hard bounce back over SNS (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--complaints", type=float, default=0.0,
        help="share of SENT emails that get a complaint back over SNS (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random faults and timings (default 0)"
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="keep logs and data here")
    parser.add_argument("--keep", action="store_true", help="keep queues, index and work dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main_soak(args: argparse.Namespace) -> int:
    try:
        faults = parse_faults(args.faults)
        domains = {"slow.example": 10.0}
        if args.domain_rate is not None:
            domains = {}
            for item in args.domain_rate:
                name, _, rate = item.partition("=")
                domains[name.strip().lower()] = float(rate)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not (0 <= args.bounces <= 1 and 0 <= args.complaints <= 1
            and args.bounces + args.complaints <= 1):  # fmt: skip
        print("error: --bounces and --complaints are shares, together at most 1", file=sys.stderr)
        return 2
    if args.emails < 1 or args.workers < 1 or args.rate <= 0:
        print("error: --emails, --workers and --rate must be positive", file=sys.stderr)
        return 2
    options = SoakOptions(
        emails=args.emails,
        workers=args.workers,
        faults=faults,
        rate=args.rate,
        concurrency=args.concurrency,
        deadline_s=args.deadline if args.deadline is not None else 60.0 + args.emails / 50,
        fault_spacing_s=args.fault_spacing,
        domain_rates=domains,
        seed=args.seed,
        work_dir=args.work_dir,
        keep=args.keep,
        progress=not args.no_progress,
        unknown_outcome=args.unknown_outcome,
        webhook_fail_rate=args.webhook_fail_rate,
        bounces=args.bounces,
        complaints=args.complaints,
    )
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        print("error: the soak needs aiosmtpd (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    es_dir = Path(tempfile.mkdtemp(prefix="mailactors-soak-es-"))
    es = elasticsearch_service(es_dir)
    try:
        broker = rabbitmq_service()
        try:
            from runtime import run_with_asyncio_host

            result = run_with_asyncio_host(run_soak, options, es.url, broker.url)
        finally:
            broker.stop()
    finally:
        es.stop()
        shutil.rmtree(es_dir, ignore_errors=True)
    f = result.figures
    window = f["window_ms"] or {}
    print(
        f"soak: {f['submitted']} submitted in {f['seconds']}s: "
        f"{f['sent']} SENT, {f['failed']} FAILED, "
        f"{f['suppressed']} SUPPRESSED, {f['bounced']} BOUNCED, {f['complained']} COMPLAINED "
        f"({f['feedback']['not_applied']} reports not applied), "
        f"{f['lost']} lost, {f['duplicates']} duplicates "
        f"(allowed: {f['claims']['unknown_resent']} claims of dead senders resent), "
        f"window p50/p99 {window.get('p50')}/{window.get('p99')} ms, "
        f"{f['failed_without_reason']} FAILED without a reason; faults: {f['faults']}"
    )
    print(json.dumps(f))
    return 0 if result.ok else 1
