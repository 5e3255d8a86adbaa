"""The tree's figures: messages per second from two readings, supervisors before their
children, and a process that is gone left out rather than failing the page."""

from __future__ import annotations

import socket
from pathlib import Path

import trio

from actors.web.tree import Trees
from runtime import ActorSystem
from runtime.testing import spawn_probe
from tests.support.embedded import embedded_config


async def test_rates_order_and_stale_sockets(
    actor_system: ActorSystem, autojump_clock: trio.abc.Clock, short_dir: Path, tmp_path: Path
) -> None:
    config = embedded_config(tmp_path, service={"run_dir": str(short_dir)})
    probe = await spawn_probe(actor_system, "probe-10")
    await spawn_probe(actor_system, "probe-2")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(short_dir / "gone.sock"))  # a socket whose process is gone: refused
    stale.close()
    (short_dir / "notes.sock").touch()  # not a socket at all
    trees = Trees(config, actor_system, "embedded")

    first = await trees.gather()
    for i in range(30):
        probe.ref.send_nowait(i)
    for _ in range(30):
        await probe.expect(int)
    await trio.sleep(2.0)
    second = await trees.gather()

    assert first["errors"] == second["errors"] == {}
    (process,) = second["processes"]  # the stale socket is left out, not an error
    assert process["name"] == "embedded" and process["local"] is True
    by_path = {a["path"]: a for a in process["actors"]}
    assert by_path["probe-10"]["rate"] == 15.0  # 30 messages in 2 s
    assert by_path["probe-2"]["rate"] == 0.0
    assert [a["path"] for a in process["actors"]] == ["probe-2", "probe-10"]  # natural order
