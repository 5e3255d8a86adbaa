"""A client other than the project's own: Google's grpcio, driven from Trio through threads.

grpcio is blocking here (its own threads and event loop), so a call from a Trio
test runs in a worker thread; several calls can then be in flight at once,
which is how a stall of the server shows: as the latency of another call.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import trio

from protos import email_pb2
from tests.support.embedded import grpc_request

AUTH = "/mailactors.v1.AuthService/"
INTEGRATION = "/mailactors.v1.IntegrationService/"
RESPONSES: dict[str, Any] = {
    "RequestEmail": email_pb2.RequestEmailResponse,
    "RequestEmails": email_pb2.RequestEmailsResponse,
    "CancelEmail": email_pb2.CancelEmailResponse,
    "SaveEmail": email_pb2.SaveEmailResponse,
    "SaveEmails": email_pb2.SaveEmailsResponse,
    "GetEmail": email_pb2.GetEmailResponse,
    "SearchEmails": email_pb2.SearchEmailsResponse,
}


class GrpcioClient:
    """One grpcio channel to 127.0.0.1:port; ``call`` returns the reply or the RpcError."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        self.metadata = [("authorization", f"Bearer {token}")] if token else []

    def close(self) -> None:
        self.channel.close()

    def call_sync(
        self, method: str, request: Any, *, compression: grpc.Compression | None = None,
        timeout: float = 30,
    ) -> Any:
        prefix = AUTH if method in ("RequestEmail", "RequestEmails", "CancelEmail") else INTEGRATION
        stub = self.channel.unary_unary(
            prefix + method,
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=RESPONSES[method].FromString,
        )
        try:
            return stub(request, metadata=self.metadata, compression=compression, timeout=timeout)
        except grpc.RpcError as exc:
            return exc

    async def call(self, method: str, request: Any, **kw: Any) -> Any:
        """``request`` may be a message or its serialized bytes (for hand-made wire data)."""
        return await trio.to_thread.run_sync(lambda: self.call_sync(method, request, **kw))

    async def timed(self, method: str, request: Any, **kw: Any) -> float:
        """The seconds one call takes, start to reply."""
        start = time.perf_counter()
        await self.call(method, request, **kw)
        return time.perf_counter() - start


def status_of(reply: Any) -> tuple[grpc.StatusCode, str]:
    assert isinstance(reply, grpc.RpcError), f"expected an error, got {reply!r}"
    return reply.code(), reply.details() or ""


def send_from_another_process(
    port: int, token: str, requests: list[bytes], times: int
) -> dict[str, int]:
    """Send each serialized RequestEmail ``times`` times over from this process: what
    ``python -m tests.support.grpcio`` runs, so that grpcio's own memory is not the server's."""
    client = GrpcioClient(port, token)
    codes: dict[str, int] = {}
    try:
        for _ in range(times):
            for request in requests:
                reply = client.call_sync("RequestEmail", request, timeout=5)
                name = reply.code().name if isinstance(reply, grpc.RpcError) else "OK"
                codes[name] = codes.get(name, 0) + 1
    finally:
        client.close()
    return codes


async def run_sender(port: int, token: str, requests: list[bytes], times: int) -> dict[str, int]:
    """``send_from_another_process`` in a child process; returns its status counts."""
    import sys

    import msgspec

    result = await trio.run_process(
        [sys.executable, "-m", "tests.support.grpcio", str(port), token, str(times)],
        stdin=msgspec.msgpack.encode(requests),
        capture_stdout=True,
    )
    counts: dict[str, int] = msgspec.json.decode(result.stdout)
    return counts


def nested(depth: int) -> Any:
    """A RequestEmail whose variables nest ``depth`` objects deep."""
    req = grpc_request()
    value = req.variables.fields["name"]
    for _ in range(depth):
        value = value.struct_value.fields["d"]
    value.string_value = "leaf"
    return req


def varint(n: int) -> bytes:
    """``n`` as a protobuf base-128 varint."""
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


if __name__ == "__main__":
    import sys

    import msgspec

    port, token, times = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    requests = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=list[bytes])
    sys.stdout.buffer.write(
        msgspec.json.encode(send_from_another_process(port, token, requests, times))
    )
