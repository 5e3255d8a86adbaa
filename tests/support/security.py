"""Helpers of the security tests: certificates, a gRPC client, hostile values, a bus probe."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import trio
from grpclib.client import Channel
from hypothesis import strategies as st

from actors.domain.event_checks import BadMessage, decode_send_event, decode_status_event
from actors.profiles.embedded import Embedded
from protos import email_grpc

# -- TLS ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA's certificate (what clients trust)
    cert: Path  # the server's certificate chain
    key: Path  # the server's private key


def make_certs(directory: Path, *names: str) -> Certs:
    """A private CA and a server certificate for ``names`` (default 127.0.0.1 and localhost)."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
    certs = Certs(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    ca.cert_pem.write_to_path(str(certs.ca))
    issued.cert_chain_pems[0].write_to_path(str(certs.cert))
    for extra in issued.cert_chain_pems[1:]:
        extra.write_to_path(str(certs.cert), append=True)
    issued.private_key_pem.write_to_path(str(certs.key))
    return certs


# -- gRPC -----------------------------------------------------------------------------


def grpc_port(app: Embedded) -> int:
    """The port the embedded gRPC server bound (auth_port = 0 picks a free one)."""
    extra = app.system.snapshot().by_path()["api"].extra or {}
    listening = extra["listening"]
    assert isinstance(listening, list)
    return int(str(listening[0]).rsplit(":", 1)[1])


class GrpcClient:
    """One channel to a server, used from Trio through an asyncio edge.

    ``app`` is an embedded system (its edge is used) or an ``AsyncioEdge``.
    """

    def __init__(
        self, app: Any, port: int, *, token: str | None = None, ssl: Any = None
    ) -> None:
        self.edge = getattr(app, "edge", app)
        self.port = port
        self.token = token
        self.ssl = ssl
        self.channel: Channel | None = None

    async def __aenter__(self) -> GrpcClient:
        async def make() -> Channel:
            return Channel("127.0.0.1", self.port, ssl=self.ssl)

        self.channel = await self.edge.run(make)
        return self

    async def __aexit__(self, *exc: object) -> None:
        channel = self.channel

        async def close() -> None:
            if channel is not None:
                channel.close()

        await self.edge.run(close)

    def metadata(self) -> dict[str, str] | None:
        return {"authorization": f"Bearer {self.token}"} if self.token else None

    async def call(
        self,
        method: str,
        request: Any,
        metadata: Any = "default",
        timeout: float = 30,
        *,
        auth: bool | None = None,
    ) -> Any:
        """``method`` is an AuthService method (RequestEmail, RequestEmails) or an
        IntegrationService one; ``auth`` says which for a name both have (CancelEmail)."""
        meta = self.metadata() if metadata == "default" else metadata
        assert self.channel is not None
        channel = self.channel
        if auth is None:
            auth = method in ("RequestEmail", "RequestEmails")
        stub: Any = (
            email_grpc.AuthServiceStub(channel)
            if auth
            else email_grpc.IntegrationServiceStub(channel)
        )

        async def go() -> Any:
            return await getattr(stub, method)(request, timeout=timeout, metadata=meta)

        return await self.edge.run(go)


# -- what a hostile caller sends -------------------------------------------------------

HOSTILE_STRINGS = [
    "Hi\r\nBcc: victim@example.com",
    "x\nX-Injected: 1",
    "x\r",
    "a\x00b",
    "../../etc/passwd",
    "/etc/passwd",
    "..\\..\\windows\\win.ini",
    "file:///etc/passwd",
    "http://169.254.169.254/latest/meta-data/",
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ self._TemplateReference__context }}",
    "<script>alert(1)</script>",
    "é@bücher.example",
    "ada@example.com\r\nBcc: evil@example.com",
    "a" * 300,
    "",
    " ",
    "\u202eevil",
    "2026-01-01T00:00:00",
    "0001-01-01T00:00:00Z",
]

SANDBOX_PAYLOADS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__ }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ config.items() }}{{ request.application.__globals__ }}",
    "{{ 7*7 }}",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(HOSTILE_STRINGS)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
hostile_text = st.text(max_size=40) | st.sampled_from(HOSTILE_STRINGS)


def mostly(
    valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """``valid`` seven times in eight: a request is delivered only if every field is fine."""
    return st.integers(0, 7).flatmap(lambda i: hostile if i == 0 else valid)


TEMPLATE_VARIABLES: dict[str, dict[str, Any]] = {
    "verification": {"name": "Ada", "code": "493817", "expires_minutes": 10},
    "password-reset": {"name": "Ada", "reset_url": "https://example.com/r/1"},
    "welcome": {"name": "Ada", "product": "Acme"},
}

recipients = (
    st.emails().map(str)
    | st.sampled_from(
        [
            "ada@example.com",
            "Ada@Example.COM",
            "user@bücher.example",
            "a@b",
            "not-an-address",
            "ada@example.com\r\nBcc: evil@example.com",
            "a" * 65 + "@example.com",
            "x@" + "d" * 250 + ".com",
        ]
    )
    | hostile_text
)
templates = st.sampled_from([*TEMPLATE_VARIABLES, "nope"]) | st.sampled_from(HOSTILE_STRINGS[:9])


@st.composite
def variables_for(draw: Any, template: str) -> dict[str, Any]:
    """Mostly the template's variables, with hostile values and extra keys mixed in."""
    base = dict(TEMPLATE_VARIABLES.get(template, {}))
    if draw(st.integers(0, 2)) == 0:
        for key in draw(st.lists(st.sampled_from(sorted(base) or ["x"]), max_size=2)):
            base[key] = draw(json_values)
    if draw(st.booleans()):
        base.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)))
    if base and draw(st.integers(0, 9)) == 0:
        base.pop(draw(st.sampled_from(sorted(base))))
    return base


good_recipients = st.sampled_from(
    ["ada@example.com", "Ada@Example.COM", "user@bücher.example", "o'neil+tag@sub.example.org"]
)
good_templates = st.sampled_from(sorted(TEMPLATE_VARIABLES))


attachment_tuples = st.lists(
    st.tuples(
        st.sampled_from(["invoice.pdf", "a.txt", "été.csv"]) | hostile_text,
        st.sampled_from(["application/pdf", "text/plain", "text/html", "application/x-msdownload"])
        | hostile_text,
        st.binary(max_size=200),
    ),
    max_size=3,
)


# -- hostile bus bodies -------------------------------------------------------------------


def _valid_send(event_id: str, template: str) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "recipient": "ada@example.com",
        "template": template,
        "variables": dict(TEMPLATE_VARIABLES[template]),
        "category": "transactional",
        "subject": None,
        "attachments": [],
        "requestedAt": "2026-01-01T00:00:00Z",
        "attempt": 1,
    }


SEND_FIELDS = list(_valid_send("x", "welcome"))
STATUS_FIELDS = ["eventId", "status", "attempt", "error", "provider", "providerMessageId",
                 "smtpCode", "smtpReply", "requestedAt", "occurredAt", "latencyMs"]


def _typed_values() -> dict[str, Any]:
    """For each field, values of the right JSON type (they pass the decoder, so the checks
    behind it are what gets exercised) and sometimes of any type."""
    text = hostile_text | recipients
    stamps = st.sampled_from(
        ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "0001-01-01T00:00:00Z",
         "9999-12-31T23:59:59+14:00", "2026-13-01T00:00:00Z", "yesterday"]
    )
    attachment = st.fixed_dictionaries(
        {
            "filename": st.sampled_from(["r.pdf", "été.csv"]) | hostile_text,
            "contentType": st.sampled_from(["application/pdf", "text/plain", "text/html"])
            | hostile_text,
            "content": st.sampled_from(["JVBERi0=", "", "not base64!", "QUJD"]),
        }
    )
    return {
        "eventId": st.uuids().map(str) | hostile_text,
        "recipient": text,
        "template": templates,
        "variables": st.dictionaries(st.sampled_from(["name", "product", "code", "reset_url",
                                                      "expires_minutes"]) | st.text(max_size=6),
                                     json_values, max_size=5),
        "category": st.just("marketing") | hostile_text,
        "subject": st.none() | hostile_text,
        "attachments": st.lists(attachment, max_size=3),
        "requestedAt": stamps,
        "occurredAt": stamps,
        "attempt": st.integers(-3, 6) | st.integers(),
        "status": st.sampled_from(["SENT", "FAILED", "SUPPRESSED", "RETRYING", "lost"]),
        "smtpCode": st.integers(-1, 1000) | st.integers(),
        "latencyMs": st.floats(allow_nan=False) | st.integers(),
        "error": hostile_text | st.integers(16000, 17000).map(lambda n: "e" * n),
        "smtpReply": hostile_text,
        "provider": hostile_text,
        "providerMessageId": hostile_text,
    }


TYPED = _typed_values()


@st.composite
def mutated(draw: Any, base: dict[str, Any], fields: list[str]) -> bytes:
    """A valid body with 0-3 fields replaced (mostly by values of the right type), removed
    or added."""
    body = dict(base)
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from([*fields, "unknownField"]))
        action = draw(st.integers(0, 9))
        if action == 0:
            body.pop(field, None)
        elif action == 1 or field not in TYPED:
            body[field] = draw(json_values)
        else:
            body[field] = draw(TYPED[field])
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode()


def _junk(draw: Any, kind: int) -> bytes:
    """A body that is not the message at all: bytes (kind 0) or some other JSON (kind 1)."""
    if kind == 0:
        return draw(st.binary(max_size=300))
    return json.dumps(draw(json_values)).encode()


@st.composite
def send_bodies(draw: Any) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind <= 1:
        return _junk(draw, kind)
    template = draw(st.sampled_from(sorted(TEMPLATE_VARIABLES)))
    base = _valid_send(str(draw(st.uuids())), template)
    if kind == 2:
        base["attachments"] = [
            {"filename": "r.pdf", "contentType": "application/pdf", "content": "JVBERi0="}
        ]
        base["variables"]["name"] = draw(st.sampled_from(SANDBOX_PAYLOADS + ["<b>&</b>"]))
        return json.dumps(base).encode()
    return draw(mutated(base, SEND_FIELDS))


@st.composite
def status_bodies(draw: Any) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind <= 1:
        return _junk(draw, kind)
    base = {
        "eventId": str(draw(st.uuids())),
        "status": draw(st.sampled_from(["SENT", "FAILED", "RETRYING", "SENDING", "PENDING"])),
        "attempt": 1,
        "occurredAt": "2026-01-01T00:00:01Z",
    }
    return draw(mutated(base, STATUS_FIELDS))


class BusProbe:
    """Publishes raw bodies on the memory bus and waits until the consumers dealt with each.

    It predicts what must happen with the decoder the consumers use. A send body
    that does not decode (or has a bad eventId / attempt / requestedAt) is
    dead-lettered with the reason. For any other send body a PENDING document is
    saved first, as auth would have: the body must then end that email SENT
    (delivered) or FAILED with the reason (and dead-lettered), never anything in
    between. A status body is dead-lettered, or reaches the updater.
    """

    def __init__(self, app: Embedded) -> None:
        self.app = app
        self.limits = app.config.limits
        self.seen: set[str] = set()
        self.taken_ids: Counter[str] = Counter()

    def _snap(self) -> dict[str, Any]:
        return self.app.system.snapshot().by_path()

    def consumed(self) -> int:
        c = self._snap()["email-server/consumer"].extra or {}
        return int(c.get("taken", 0)) + int(c.get("refused", 0))  # type: ignore[call-overload]

    def senders_idle(self) -> bool:
        """Every job the consumer handed out has been handled by a sender."""
        snap = self._snap()
        taken = int((snap["email-server/consumer"].extra or {}).get("taken", 0))  # type: ignore[call-overload]
        done = sum(
            a.processed for p, a in snap.items() if p.startswith("email-server/senders/sender-")
        )
        return bool(done == taken)

    def status_refused(self) -> int:
        return int((self._snap()["integration/status-consumer"].extra or {}).get("refused", 0))  # type: ignore[call-overload]

    def outcomes(self) -> int:
        outcomes = (self._snap()["integration/updater"].extra or {}).get("outcomes", {})
        assert isinstance(outcomes, dict)
        return sum(int(v) for v in outcomes.values())

    @property
    def dead(self) -> list[tuple[str, bytes, str]]:
        return self.app.bus.dead_letters  # type: ignore[attr-defined,no-any-return]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        """Poll: the actors' counters are what is observed, they have no event to wait on."""
        with trio.fail_after(timeout):
            while not predicate():  # noqa: ASYNC110
                await trio.sleep(0.0005)

    async def send(self, body: bytes) -> str:
        """Publish one send body, wait until it is dealt with; return what happened."""
        from actors.domain.schema import EmailDocument, Status

        try:
            event = decode_send_event(body, self.limits)
        except BadMessage:
            event = None
        if event is not None and event.event_id in self.seen:
            # hypothesis likes to repeat values: give this email an eventId of its own
            fresh = json.loads(body)
            fresh["eventId"] = str(uuid.uuid4())
            body = json.dumps(fresh).encode()
            event = decode_send_event(body, self.limits)
        watched = event is not None and event.event_id not in self.seen
        if event is not None:
            self.seen.add(event.event_id)
        if watched:
            assert event is not None
            await self.app.api.save(
                EmailDocument(
                    event_id=event.event_id, recipient="ada@example.com", template="welcome"
                )
            )
        consumed, dead_before = self.consumed(), len(self.dead)
        await self.app.bus.publish_raw("send", body)  # type: ignore[attr-defined]
        await self.wait(lambda: self.consumed() == consumed + 1)
        dead = self.dead[dead_before:]
        assert len(dead) <= 1
        if event is None:
            [(queue, dead_body, reason)] = dead
            assert queue == "send" and dead_body == body
            assert reason.startswith(("undecodable EmailSendEvent: ", "invalid EmailSendEvent: "))
            return "refused"
        await self.wait(self.senders_idle)
        if not watched:  # a repeated eventId: its document is terminal already
            return "repeat"
        doc = await self.app.api.wait_terminal(event.event_id)
        if dead:
            [(queue, dead_body, reason)] = dead
            assert (
                queue == "send"
                and dead_body == body
                and reason.startswith("invalid EmailSendEvent: ")
            )
            assert doc.status is Status.FAILED, doc
            assert (doc.error or "").startswith("refused by the email server: "), doc.error
            return "refused"
        assert doc.status is Status.SENT, (doc.status, doc.error)
        self.taken_ids[event.event_id] += 1
        return "taken"

    async def status(self, body: bytes) -> str:
        try:
            decode_status_event(body)
        except BadMessage:
            refused = True
        else:
            refused = False
        before, outcomes, dead_before = self.status_refused(), self.outcomes(), len(self.dead)
        await self.app.bus.publish_raw("status", body)  # type: ignore[attr-defined]
        if refused:
            await self.wait(lambda: self.status_refused() == before + 1)
            [(queue, dead_body, reason)] = self.dead[dead_before:]
            assert queue == "status" and dead_body == body
            assert reason.startswith(
                ("undecodable EmailStatusEvent: ", "invalid EmailStatusEvent: ")
            )
            return "refused"
        await self.wait(lambda: self.outcomes() >= outcomes + 1)
        assert self.status_refused() == before and len(self.dead) == dead_before
        return "applied"


def maildir_event_ids(path: Path) -> Counter[str]:
    import mailbox

    ids: Counter[str] = Counter()
    if not path.exists():
        return ids
    for m in mailbox.Maildir(path, create=False):
        msg = message_from_bytes(bytes(m), policy=policy.default)
        ids[str(msg["X-Mailactors-Event-Id"])] += 1
    return ids


def assert_no_restarts(app: Embedded) -> None:
    snapshot = app.system.snapshot()
    restarted = {a.path: a.restarts for a in snapshot.actors if a.restarts or a.failures}
    assert not restarted, f"actors restarted or failed: {restarted}"
    assert all(a.state.value == "running" for a in snapshot.actors), [
        (a.path, a.state.value) for a in snapshot.actors if a.state.value != "running"
    ]


def fresh_id() -> str:
    return str(uuid.uuid4())


def run_in_thread(fn: Callable[[], None]) -> Any:
    """Run a (hypothesis) function in a worker thread; it calls back with trio.from_thread.run."""
    return trio.to_thread.run_sync(fn)
