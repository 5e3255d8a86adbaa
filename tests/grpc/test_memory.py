"""Refused requests leave nothing behind (issue 14, item 7).

RSS had grown from 82 to 146 MiB across ~120 bad requests. It was no leak: each
request with 200,000 variables was parsed and converted to Python objects
(~140 MiB at the peak) before it was refused, and glibc keeps freed memory
mapped for reuse (its high-water mark; ``malloc_trim`` gives most of it back),
so RSS stayed near the largest peak so far. Now such a request is refused from
the wire format before it is parsed, so refusing costs no more than the bytes
received, and RSS stays flat however many requests are refused.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from tests.support.embedded import TOKEN, grpc_request
from tests.support.embedded_process import embedded_env, running_embedded
from tests.support.grpcio import nested, run_sender, varint

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS")


def many_variables_wire(count: int = 200_000) -> bytes:
    """What ``test_grpc_intake.many_variables`` builds, written as wire bytes directly:
    building it with protobuf would leave this process's RSS at that peak."""

    def field(number: int, value: bytes) -> bytes:
        return bytes([number << 3 | 2]) + varint(len(value)) + value

    head = grpc_request(template="welcome", variables={"name": "Ada", "product": "P"})
    entries = b"".join(
        field(1, field(1, b"var-%07d" % i) + field(2, field(3, b"x" * 6))) for i in range(count)
    )
    return bytes(head.SerializeToString()) + field(3, entries)  # a second variables: merged


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_refused_requests_leave_rss_flat(tmp_path: Path) -> None:
    """The server is an embedded ``up`` of its own and the client (grpcio) another process, so
    only the server's memory is measured, not a test process's that has run other tests."""
    small = [
        nested(40),
        grpc_request(recipient="not an address"),
        grpc_request(template="nope"),
        grpc_request(attachments=[("a.exe", "application/x-msdownload", b"MZ")]),
    ]
    small_wire = [bytes(r.SerializeToString()) for r in small] + [b"\xff\xff\xff"]
    large_wire = [  # 200,000 variables (4.3 MB); an attachment over the request cap (11 MB)
        many_variables_wire(),
        bytes(
            grpc_request(
                attachments=[("a.pdf", "application/pdf", b"x" * 11_000_000)]
            ).SerializeToString()
        ),
    ]
    refused = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}
    token_file = tmp_path / "grpc-token"
    token_file.write_text(TOKEN + "\n")
    env = embedded_env(tmp_path, MAILACTORS__GRPC__TOKEN_FILE=str(token_file))
    port = int(env["MAILACTORS__GRPC__AUTH_PORT"])
    async with running_embedded(env, tmp_path / "up.log") as server:
        with trio.fail_after(120):
            # Warm-up (1,000 small, 6 large): buffers and caches reach their working size.
            warm_codes = await run_sender(port, TOKEN, small_wire, 200)
            warm_codes.update(await run_sender(port, TOKEN, large_wire, 3))
            assert set(warm_codes) <= refused, warm_codes
            warm = rss_mib(server.pid)
            codes = await run_sender(port, TOKEN, small_wire, 2_000)  # 10,000 small
            codes.update(await run_sender(port, TOKEN, large_wire, 10))  # 20 large
            end = rss_mib(server.pid)
        assert set(codes) <= refused, codes
        print(
            f"RSS after warm-up {warm:.1f} MiB, after 10,020 more refusals {end:.1f} MiB",
            file=sys.stderr,
        )
        # Before: the first request with 200,000 variables alone took RSS up by 100 MiB or more.
        assert end - warm < 8, (warm, end)
        assert server.returncode is None, "the server died"
