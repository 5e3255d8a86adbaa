"""Operating the distributed profile: the console, the metrics endpoints, access, logs.

Real processes throughout: ``supervisor.py up --profile distributed`` (the
Cluster helper of test_distributed.py), the console and ``send --batch`` run as
subprocesses of the test, the metrics scraped over HTTP and parsed with
prometheus-client's parser, a connection attempted as the ``nobody`` user.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import ROOT, Cluster, cluster_env, delete_topology, event_ids_received
from tests.support.promtool import check_metrics
from tests.support.services import local_broker_ctl
from tests.support.smtp_servers import CapturingServer

pytestmark = pytest.mark.services

SUPERVISOR = str(ROOT / "supervisor.py")
CONCURRENCY = 3
EMAIL_SERVER_ACTORS = {
    "email-server",
    "email-server/publisher",
    "email-server/throttler",
    "email-server/retrier",
    "email-server/recorder",
    "email-server/senders",
    *(f"email-server/senders/sender-{i}" for i in range(CONCURRENCY)),
    "email-server/consumer",
}
INTEGRATION_ACTORS = {"integration", "integration/writer", "integration/updater",
                      "integration/status-consumer", "api"}
AUTH_ACTORS = {"auth", "auth/requests", "api"}


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short directory for the control sockets (a socket path must stay under 108 bytes).

    Mode 0755, so that only the socket's own mode keeps other users out.
    """
    path = Path(tempfile.mkdtemp(prefix="ma-run-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port_block(n: int) -> int:
    """A base port with the n ports from it free (each service adds its offset)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n > 65000:
            continue
        try:
            held = []
            for port in range(base, base + n):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise RuntimeError("no block of free ports")


async def cli(
    env: dict[str, str], *args: str, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """``supervisor.py --profile distributed ARGS`` as a subprocess."""
    argv = [sys.executable, SUPERVISOR, "--profile", "distributed", *args]
    with trio.fail_after(timeout):
        done = await trio.run_process(
            argv, env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {done.returncode}\nstdout:\n{done.stdout.decode()}\n"
            f"stderr:\n{done.stderr.decode()}"
        )
    return done


async def console_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = await cli(env, "console", *args, "--json")
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def write_batch(path: Path, recipients: list[str]) -> Path:
    with path.open("w") as f:
        for to in recipients:
            line = {"to": to, "template": "verification",
                    "variables": {"name": "Ada", "code": "1234", "expires_minutes": 5}}
            f.write(json.dumps(line) + "\n")
        f.write("\n")  # blank lines are skipped
    return path


async def send_batch(env: dict[str, str], tmp: Path, recipients: list[str]) -> list[str]:
    batch = write_batch(tmp / f"batch-{uuid.uuid4().hex[:6]}.jsonl", recipients)
    done = await cli(env, "send", "--batch", str(batch))
    answers = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert len(answers) == len(recipients) and all("eventId" in a for a in answers), answers
    assert b"accepted" in done.stderr  # the summary; the bar went to stderr too
    return [a["eventId"] for a in answers]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    check_metrics(text)  # by Prometheus's conventions (promtool)
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        v for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` (another process's state: there is no event to wait on)."""
    deadline = trio.current_time() + timeout
    while trio.current_time() < deadline:
        if await predicate():
            return
        await trio.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def topologies(rabbitmq_url: str) -> Iterator[list[dict[str, str]]]:
    """Append a cluster's env: its queues and exchanges are deleted after the test."""
    envs: list[dict[str, str]] = []
    yield envs
    for env in envs:
        delete_topology(env, url=rabbitmq_url)


def actors_of(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["path"]: a for a in answer["snapshot"]["actors"]}


async def test_console_and_metrics_against_a_running_distributed_system(
    tmp_path, run_dir, elasticsearch_url, rabbitmq_url, topologies
):
    metrics_base = free_port_block(4)
    with CapturingServer() as smtp:
        env = cluster_env(tmp_path, elasticsearch_url, rabbitmq_url, smtp.port)
        topologies.append(env)
        env.update({
            "MAILACTORS__SERVICE__RUN_DIR": str(run_dir),
            "MAILACTORS__METRICS__PORT": str(metrics_base),
            "MAILACTORS__EMAIL_SERVER__CONCURRENCY": str(CONCURRENCY),
            # limits high enough not to slow the test, so that the console shows buckets
            "MAILACTORS__THROTTLE__RATE": "1000",
            "MAILACTORS__THROTTLE__PER_DOMAIN": '{"example.com": 500}',
        })
        async with Cluster(env, workers=2, log=tmp_path / "cluster.log").running():
            sockets = sorted(p.name for p in run_dir.iterdir())
            assert sockets == ["auth.sock", "email-server-0.sock", "email-server-1.sock",
                               "integration.sock"]
            assert all(stat.S_IMODE((run_dir / s).stat().st_mode) == 0o600 for s in sockets)

            # -- requests with the progress-bar batch command, all delivered
            ids = await send_batch(env, tmp_path, [f"user{i}@example.com" for i in range(12)])

            async def delivered() -> bool:
                return set(event_ids_received(smtp)) >= set(ids)

            await wait_until(delivered, 60, "12 emails at the SMTP server")

            # -- one snapshot of everything, for scripts
            data = await console_json(env)
            assert data["errors"] == {}
            services = data["services"]
            assert set(services) == {"integration", "auth", "email-server-0", "email-server-1"}
            for name, expected in (("integration", INTEGRATION_ACTORS), ("auth", AUTH_ACTORS),
                                   ("email-server-0", EMAIL_SERVER_ACTORS),
                                   ("email-server-1", EMAIL_SERVER_ACTORS)):
                actors = actors_of(services[name])
                assert expected <= set(actors), (name, expected - set(actors))
                assert all(a["state"] == "running" for a in actors.values()), actors
                assert all(a["restarts"] == 0 for a in actors.values())
                info = services[name]["info"]
                assert info["metrics"].endswith("/metrics")
            worker0 = services["email-server-0"]
            assert worker0["intake"]["paused"] is False
            queues = worker0["info"]["queues"]
            assert queues is not None, worker0["info"].get("queues_error")
            assert env["MAILACTORS__BUS__SEND_QUEUE"] in queues
            assert env["MAILACTORS__BUS__DEAD_LETTER_QUEUE"] in queues
            buckets_reported = [a for a in worker0["snapshot"]["actors"]
                                if a["path"] == "email-server/throttler"][0]["extra"]
            assert set(buckets_reported["buckets"]) == {"provider", "example.com"}
            assert buckets_reported["buckets"]["provider"]["rate"] == 500  # 1000 over 2 workers
            processed = sum(
                actors_of(services[w])[f"email-server/senders/sender-{i}"]["processed"]
                for w in ("email-server-0", "email-server-1") for i in range(CONCURRENCY)
            )
            assert processed == 12

            # -- restart an actor through the console; its supervisor brings it back
            done = await cli(
                env, "console", "email-server-0", "--restart", "email-server/throttler"
            )
            assert b"email-server/throttler crashed on purpose and restarted" in done.stdout

            async def restarted() -> bool:
                a = actors_of(
                    (await console_json(env, "email-server-0"))["services"]["email-server-0"]
                )
                t = a["email-server/throttler"]
                return bool(t["restarts"] >= 1 and t["state"] == "running"
                            and a["email-server/consumer"]["state"] == "running")

            await wait_until(restarted, 30, "the throttler to be restarted")
            after = actors_of((await console_json(env))["services"]["email-server-0"])
            throttler = after["email-server/throttler"]
            assert throttler["last_error"]["type"] == "InjectedCrash"
            assert "operator" in throttler["last_error"]["message"]
            other = actors_of(
                (await console_json(env, "email-server-1"))["services"]["email-server-1"]
            )
            assert other["email-server/throttler"]["restarts"] == 0  # only the one asked for
            missing = await cli(env, "console", "--restart", "email-server/nope", check=False)
            assert missing.returncode == 1 and b"no actor" in missing.stderr
            assert missing.stdout == b""  # an error is never on stdout

            # -- pause intake: nothing more is sent until it is resumed
            paused = await cli(env, "console", "email-server", "--pause")
            assert paused.stdout.count(b"intake paused") == 2
            snap = await console_json(env, "email-server")
            for name in ("email-server-0", "email-server-1"):
                assert snap["services"][name]["intake"]["paused"] is True
                assert (
                    actors_of(snap["services"][name])["email-server/consumer"]["extra"]["paused"]
                    is True
                )
            before = len(smtp.messages())
            late = await send_batch(env, tmp_path, [f"late{i}@example.com" for i in range(5)])
            await trio.sleep(3)
            assert len(smtp.messages()) == before, "a paused email server sent something"
            await cli(env, "console", "email-server", "--resume")
            ids += late

            async def all_delivered() -> bool:
                return set(event_ids_received(smtp)) >= set(ids)

            await wait_until(all_delivered, 60, "the emails held during the pause")

            # -- dead letters (none here), from every process; the broker's DLQ through one
            dead = json.loads((await cli(env, "console", "--dead-letters", "--json")).stdout)
            assert set(dead["dead_letters"]) == set(services)
            external = [d["external"] for d in dead["dead_letters"].values() if "external" in d]
            assert external == [[]]

            # -- the live view renders a few refreshes and exits by itself: with four
            # processes, one summary row each; a service named, its tree
            live_env = {**env, "TTY_COMPATIBLE": "1", "TERM": "xterm-256color",
                        "COLUMNS": "200", "LINES": "400"}

            async def live_screen(*args: str) -> str:
                live = await cli(live_env, "console", *args, "--refreshes", "3",
                                 "--interval", "0.3")  # fmt: skip
                raw_screen = live.stdout.decode()
                assert "\x1b[" in raw_screen  # rich drew it as on a terminal
                return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw_screen)

            summary = await live_screen()
            assert summary.count("4 instances") >= 3  # three frames drawn (and the last again)
            for name in ("integration", "auth", "email-server-0", "email-server-1", "queued",
                         "msg/s", "queues:", env["MAILACTORS__BUS__SEND_QUEUE"]):
                assert name in summary, name
            assert "sender-" not in summary
            tree = await live_screen("email-server-1")
            assert tree.count("email-server-1  pid") >= 3
            for name in ("sender-", "throttler", "throttle:", "msg/s", "queues:"):
                assert name in tree, name
            assert "status-consumer" in await live_screen("integration")

            # -- the metrics endpoints count what was sent
            ports = {"integration": metrics_base, "auth": metrics_base + 1,
                     "email-server-0": metrics_base + 2, "email-server-1": metrics_base + 3}
            scraped: dict[str, Any] = {}

            async def counted_everything() -> bool:
                # the last status updates reach the store a moment after the last send
                for name, port in ports.items():
                    scraped[name] = await trio.to_thread.run_sync(scrape, port)
                return total(scraped["integration"], "mailactors_emails_total",
                             component="integration", status="SENT") >= len(ids)

            await wait_until(counted_everything, 30, "integration to count every email SENT")
        received = event_ids_received(smtp)

    n = len(ids)
    assert set(received) == set(ids) and max(received.values()) == 1
    workers = [scraped["email-server-0"], scraped["email-server-1"]]
    assert sum(total(w, "mailactors_emails_total", component="email-server", status="SENT")
               for w in workers) == n
    assert (
        sum(total(w, "mailactors_provider_replies_total", code_class="2xx") for w in workers) == n
    )
    assert sum(total(w, "mailactors_request_to_sent_seconds_count") for w in workers) == n
    assert all(total(w, "mailactors_emails_total", status="FAILED") == 0 for w in workers)
    auth = scraped["auth"]
    assert total(auth, "mailactors_emails_total", component="auth", status="PENDING") == n
    integration = scraped["integration"]
    assert (
        total(integration, "mailactors_emails_total", component="integration", status="PENDING")
        == n
    )
    assert (
        total(integration, "mailactors_emails_total", component="integration", status="SENT") == n
    )
    # Each series from the process that owns it: no email-server series from auth or
    # integration, the broker's queues from integration only.
    for name in ("auth", "integration"):
        assert total(scraped[name], "mailactors_emails_total", component="email-server") == 0
        assert not any(k[0] == "mailactors_request_to_sent_seconds_count" for k in scraped[name])
    w0 = scraped["email-server-0"]
    assert total(w0, "mailactors_actor_restarts_total", path="email-server/throttler") == 1
    assert total(scraped["email-server-1"], "mailactors_actor_restarts_total") == 0
    assert total(w0, "mailactors_mailbox_capacity", path="email-server/throttler") > 0
    assert (
        "mailactors_mailbox_depth",
        (
            ("kind", "Sender"),
            ("path", "email-server/senders/sender-0"),
            ("process", "email-server-0"),
        ),
    ) in w0
    assert total(w0, "mailactors_intake_paused") == 0
    assert not any(k[0] in ("mailactors_dlq_size", "mailactors_queue_depth") for k in w0)
    queue = ("mailactors_queue_depth", (("queue", env["MAILACTORS__BUS__SEND_QUEUE"]),))
    assert queue in integration
    assert ("mailactors_throttle_waits_total", (("path", "email-server/throttler"),
                                                ("process", "email-server-0"))) in w0
    assert (
        "mailactors_throttle_tokens",
        (
            ("bucket", "example.com"),
            ("path", "email-server/throttler"),
            ("process", "email-server-0"),
        ),
    ) in w0
    assert total(w0, "process_resident_memory_bytes") > 0


# -- access -----------------------------------------------------------------------------

NOBODY_CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("denied")
    sys.exit(0)
s.sendall(b'{"cmd": "snapshot"}\\n')
print("CONNECTED", s.recv(100))
sys.exit(1)
"""


def connect_as_nobody(path: Path) -> str:
    """Try to connect to the socket at ``path`` as the user nobody; return what happened.

    With setpriv or runuser and a system python nobody may run; else in a forked
    child that drops root with os.setuid before it connects.
    """
    python = next(
        (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None
    )
    wrapper = None
    if shutil.which("setpriv"):
        wrapper = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    elif shutil.which("runuser"):
        wrapper = ["runuser", "-u", "nobody", "--"]
    if python is not None and wrapper is not None:
        done = subprocess.run([*wrapper, python, "-c", NOBODY_CONNECT, str(path)],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode in (0, 1), done.stderr
        return done.stdout.strip()
    pid = os.fork()
    if pid == 0:  # the child: no Python-level clean-up, just the attempt and _exit
        code = 2
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(str(path))
                code = 1
            except PermissionError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {0: "denied", 1: "CONNECTED"}.get(os.waitstatus_to_exitcode(status), "error")


@pytest.fixture
def broker_user(rabbitmq_url: str) -> Iterator[tuple[str, str]]:
    """A RabbitMQ user with a password of its own, so that the test can look for it in logs."""
    ctl = local_broker_ctl(rabbitmq_url, "a broker user of the test's own")
    user, password = f"ma-test-{uuid.uuid4().hex[:8]}", f"brokerpw-{uuid.uuid4().hex}"
    subprocess.run([ctl, "-q", "add_user", user, password], check=True, capture_output=True)
    try:
        subprocess.run([ctl, "-q", "set_permissions", "-p", "/", user, ".*", ".*", ".*"],
                       check=True, capture_output=True)
        yield user, password
    finally:
        subprocess.run([ctl, "-q", "delete_user", user], capture_output=True)


def accept_login(user: str, password: str) -> Any:
    from aiosmtpd.smtp import AuthResult

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        return AuthResult(
            success=data.login == user.encode() and data.password == password.encode(),
            handled=False,
        )

    return authenticator


async def test_access_control_secrets_and_correlated_logs(
    tmp_path, run_dir, elasticsearch_url, rabbitmq_url, broker_user, topologies
):
    user, broker_password = broker_user
    smtp_password = f"smtppw-{uuid.uuid4().hex}"
    grpc_token = f"grpctoken-{uuid.uuid4().hex}"
    control_token = f"ctltoken-{uuid.uuid4().hex}"
    secrets = (broker_password, smtp_password, grpc_token, control_token)
    metrics_base = free_port_block(3)
    control_base = free_port_block(3)
    with CapturingServer(authenticator=accept_login("mailer", smtp_password),
                         auth_require_tls=False) as smtp:
        env = cluster_env(tmp_path, elasticsearch_url, rabbitmq_url, smtp.port)
        topologies.append(env)
        env.update({
            "MAILACTORS__SERVICE__RUN_DIR": str(run_dir),
            "MAILACTORS__SERVICE__LOG_FORMAT": "json",
            "MAILACTORS__SERVICE__LOG_LEVEL": "DEBUG",
            "MAILACTORS__METRICS__PORT": str(metrics_base),
            "MAILACTORS__CONTROL__PORT": str(control_base),
            "MAILACTORS__CONTROL__TOKEN_ENV": "TEST_CONTROL_TOKEN",
            "TEST_CONTROL_TOKEN": control_token,
            "MAILACTORS__GRPC__TOKEN_ENV": "TEST_GRPC_TOKEN",
            "TEST_GRPC_TOKEN": grpc_token,
            "MAILACTORS__BUS__URL": f"amqp://{user}@127.0.0.1:5672/",
            "MAILACTORS__BUS__PASSWORD_ENV": "TEST_BUS_PASSWORD",
            "TEST_BUS_PASSWORD": broker_password,
            "MAILACTORS__PROVIDER__SMTP__USERNAME": "mailer",
            "MAILACTORS__PROVIDER__SMTP__PASSWORD_ENV": "TEST_SMTP_PASSWORD",
            "TEST_SMTP_PASSWORD": smtp_password,
        })
        log_path = tmp_path / "cluster.log"
        async with Cluster(env, workers=1, log=log_path).running():
            # -- the Unix socket: owner only, and really refused to another user
            sock = run_dir / "email-server-0.sock"
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
            assert sock.stat().st_uid == os.getuid()
            assert await trio.to_thread.run_sync(connect_as_nobody, sock) == "denied"

            # -- TCP: the right token works, a wrong one is refused and gets nothing
            worker_port = control_base + 2  # email-server-0: base + 2 + index 0
            ok = json.loads((await cli(env, "console", "--tcp", f"127.0.0.1:{worker_port}",
                                       "--json")).stdout)
            assert "email-server/consumer" in actors_of(next(iter(ok["services"].values())))
            wrong = await cli({**env, "TEST_CONTROL_TOKEN": "not-the-token"}, "console", "--tcp",
                              f"127.0.0.1:{worker_port}", "--json", check=False)
            assert wrong.returncode == 1
            refused = json.loads(wrong.stdout)
            assert refused["services"] == {} and "refused" in next(iter(refused["errors"].values()))
            with socket.create_connection(("127.0.0.1", worker_port), timeout=10) as raw:
                raw.sendall(b'{"cmd": "restart", "path": "email-server/throttler", "token": "x"}\n')
                answer = raw.recv(4096)
                assert json.loads(answer) == {"ok": False, "error": "refused: bad or missing token"}
                assert raw.recv(10) == b""  # closed
            snap = await console_json(env, "email-server-0")
            throttler = actors_of(snap["services"]["email-server-0"])["email-server/throttler"]
            assert throttler["restarts"] == 0  # the refused restart did nothing

            # -- emails through an authenticated SMTP server, with every secret in use
            ids = await send_batch(env, tmp_path, [f"user{i}@example.com" for i in range(5)])

            async def stored() -> bool:
                s = await trio.to_thread.run_sync(scrape, metrics_base)
                return (
                    total(s, "mailactors_emails_total", component="integration", status="SENT") == 5
                )

            await wait_until(stored, 60, "5 emails SENT in the store")
            console_out = (await cli(env, "console", "--json")).stdout.decode()
            await cli(env, "console", "--restart", "email-server/senders/sender-0")
        assert set(event_ids_received(smtp)) == set(ids)

    log = log_path.read_text()
    encoded = (base64.b64encode(smtp_password.encode()).decode(),  # AUTH LOGIN
               base64.b64encode(b"\0mailer\0" + smtp_password.encode()).decode())  # AUTH PLAIN
    for secret in (*secrets, *encoded):
        assert secret not in log, "a secret reached the log"
        assert secret not in console_out, "a secret reached the console"
    # -- one email can be followed through the three services by its eventId
    by_id: dict[str, set[str]] = {i: set() for i in ids}
    for line in log.splitlines():
        _, _, text = line.partition("] ")
        if not text.startswith("{"):
            continue
        record = json.loads(text)
        if record.get("event_id") in by_id:
            by_id[record["event_id"]].add(record["logger"])
    for event_id, loggers in by_id.items():
        assert {
            "mailactors.auth",
            "mailactors.integration",
            "mailactors.email_server",
        } <= loggers, (event_id, loggers)
