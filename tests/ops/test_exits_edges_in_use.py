"""A taken port of the HTTP endpoint or the inbound SMTP endpoint is one line naming the address
and the setting, like the gRPC port's (hypercorn's own error names no address)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from actors.ops.exits import Exit
from tests.support.embedded_process import SUPERVISOR, embedded_env

BOUNCES = {
    "MAILACTORS__BOUNCES__ENABLED": "true",
    "MAILACTORS__BOUNCES__DOMAIN": "bounces.example.com",
    "MAILACTORS__BOUNCES__SECRET_ENV": "QA_EDGES_BOUNCE_KEY",
    "QA_EDGES_BOUNCE_KEY": "a-bounce-key-of-enough-bytes",
}


async def _up(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(90):
        return await trio.run_process(
            [sys.executable, SUPERVISOR, "up"], env=env,
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip


@pytest.mark.parametrize(("key", "extra"), [("http.port", {}), ("bounces.port", BOUNCES)])
async def test_a_taken_edge_port_is_one_line_naming_it(
    key: str, extra: dict[str, str], tmp_path: Path
) -> None:
    env_key = "MAILACTORS__" + key.upper().replace(".", "__")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = await _up(embedded_env(tmp_path, **extra, **{env_key: str(port)}))
    err = done.stderr.decode()
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert done.returncode == Exit.ADDRESS_IN_USE, err
    assert "Traceback" not in err
    assert last.startswith(f"cannot listen on 127.0.0.1:{port} ({key}): address already in use")
    assert f"{env_key}=PORT" in last
