"""Start-up failures as an operator meets them: one line on stderr, a documented exit status,
no traceback (``--debug`` shows it); a closed pipe and a second Ctrl-C end quietly.

Each test runs supervisor.py as a user would, in a process of its own.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from actors.ops.exits import Exit, explain
from actors.testing.localservices import free_port, port_taken
from config import ConfigError, load_config
from tests.support.embedded_process import SUPERVISOR, cli, embedded_env, running_embedded


def _lines(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    return [line for line in done.stderr.decode().splitlines() if line.strip()]


async def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(90):
        return await trio.run_process(
            [sys.executable, SUPERVISOR, *args],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_missing_secret_is_one_line_and_status_2(tmp_path: Path) -> None:
    env = embedded_env(tmp_path, MAILACTORS__GRPC__TOKEN_ENV="NOPE_TOKEN_16")
    done = await _run(env, "up")
    lines = _lines(done)
    assert done.returncode == Exit.CONFIG, lines
    assert lines == [
        "configuration error: grpc.token: environment variable NOPE_TOKEN_16 is not set"
        " (--debug for the traceback)"
    ]


async def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = embedded_env(tmp_path, MAILACTORS__GRPC__TOKEN_ENV="NOPE_TOKEN_16")
    done = await _run(env, "up", "--debug")
    err = done.stderr.decode()
    assert done.returncode not in (0, Exit.CONFIG)
    assert "Traceback" in err and "NOPE_TOKEN_16 is not set" in err


async def test_port_in_use_names_the_setting_and_status_4(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    port = int(env["MAILACTORS__GRPC__AUTH_PORT"])
    with port_taken(port):
        done = await _run(env, "up")
    lines = _lines(done)
    assert done.returncode == Exit.ADDRESS_IN_USE, lines
    assert len(lines) == 1, lines
    assert f"cannot listen on 127.0.0.1:{port} (grpc.auth_port)" in lines[0]
    assert "MAILACTORS__GRPC__AUTH_PORT=PORT" in lines[0]


async def test_metrics_port_in_use_names_its_setting(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    with port_taken() as port:
        done = await _run({**env, "MAILACTORS__METRICS__PORT": str(port)}, "up")
    lines = _lines(done)
    assert done.returncode == Exit.ADDRESS_IN_USE, lines
    assert f"cannot listen on 127.0.0.1:{port} (metrics.port)" in lines[-1]
    assert "Traceback" not in done.stderr.decode()


async def test_the_launcher_checks_the_ports_before_it_starts_a_process(tmp_path: Path) -> None:
    with port_taken() as port:
        env = embedded_env(tmp_path, MAILACTORS__GRPC__INTEGRATION_PORT=str(port))
        done = await _run(env, "up", "--profile", "distributed")
    lines = _lines(done)
    assert done.returncode == Exit.ADDRESS_IN_USE, lines
    assert lines == [
        f"cannot listen on 127.0.0.1:{port} (grpc.integration_port): address already in use; "
        "choose another port with MAILACTORS__GRPC__INTEGRATION_PORT=PORT"
        " (--debug for the traceback)"
    ]


async def test_demo_picks_a_free_port_when_its_own_is_taken(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    port = int(env["MAILACTORS__GRPC__AUTH_PORT"])
    with port_taken(port):
        done = await _run(env, "demo")
    lines = _lines(done)
    assert done.returncode == 0, lines
    assert len(lines) == 1 and lines[0].startswith(f"127.0.0.1:{port} is in use; "), lines
    assert done.stdout.decode().splitlines()[-1].startswith("3 of 3 SENT")


async def test_templates_missing_under_root_is_one_line(tmp_path: Path) -> None:
    env = embedded_env(tmp_path, MAILACTORS__SERVICE__ROOT=str(tmp_path))
    done = await _run(env, "up")
    lines = _lines(done)
    assert done.returncode == Exit.CONFIG, lines
    assert len(lines) == 1 and lines[0].startswith("templates.dir: "), lines
    assert str(tmp_path / "templates") in lines[0]


async def test_a_data_dir_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = embedded_env(tmp_path, MAILACTORS__SERVICE__DATA_DIR=str(blocker / "data"))
    for key in ("RUN_DIR", "STORE__SQLITE_PATH", "EMAIL_SERVER__IDEMPOTENCY_PATH",
                "PROVIDER__MAILDIR_PATH"):  # fmt: skip
        env.pop(f"MAILACTORS__{key}" if "__" in key else f"MAILACTORS__SERVICE__{key}")
    done = await _run(env, "up")
    lines = _lines(done)
    assert done.returncode == Exit.CONFIG, lines
    assert len(lines) == 1 and lines[0].startswith(f"cannot use {blocker}"), lines


async def test_a_control_socket_path_too_long_is_one_line(tmp_path: Path) -> None:
    env = embedded_env(tmp_path, MAILACTORS__SERVICE__RUN_DIR=str(tmp_path / ("x" * 110)))
    done = await _run(env, "up")
    lines = _lines(done)
    assert done.returncode == Exit.CONFIG, lines
    assert "choose a shorter service.run_dir" in lines[-1] and "Traceback" not in "".join(lines)


async def test_broker_password_unset_stops_the_launcher_before_any_process(
    tmp_path: Path,
) -> None:
    env = embedded_env(tmp_path, MAILACTORS__BUS__PASSWORD_ENV="NOPE_RABBIT_16")
    done = await _run(env, "up", "--profile", "distributed")  # the option after the command
    lines = _lines(done)
    assert done.returncode == Exit.CONFIG, lines
    assert lines == [
        "configuration error: bus.password: environment variable NOPE_RABBIT_16 is not set"
        " (--debug for the traceback)"
    ]


async def test_broker_unreachable_is_one_line_without_library_tracebacks(
    tmp_path: Path,
) -> None:
    env = embedded_env(
        tmp_path,
        MAILACTORS__BUS__URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        MAILACTORS__BUS__PUBLISH_TIMEOUT_S="1",
        MAILACTORS__STORE__URL=f"http://127.0.0.1:{free_port()}",
    )
    done = await _run(env, "--profile", "distributed", "run", "email-server")
    lines = _lines(done)
    assert done.returncode == Exit.UNAVAILABLE, lines
    assert "Traceback" not in done.stderr.decode()
    assert not any("aiormq" in line for line in lines), lines
    assert lines[-1].startswith("cannot reach RabbitMQ within 1s"), lines
    # Before it: the bus's own one line per retry, and nothing else.
    assert all("RabbitMQ not reachable yet" in line for line in lines[:-1]), lines


async def test_a_process_of_the_launcher_failing_to_start_is_its_lines_and_one_more(
    tmp_path: Path,
) -> None:
    env = embedded_env(
        tmp_path,
        MAILACTORS__BUS__URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        MAILACTORS__BUS__PUBLISH_TIMEOUT_S="1",
        MAILACTORS__STORE__URL=f"http://127.0.0.1:{free_port()}",
    )
    done = await _run(env, "up", "--profile", "distributed", "--log-level", "WARNING")
    lines = _lines(done)
    assert done.returncode == Exit.UNAVAILABLE, lines
    # What integration said, prefixed with its name, then one line: no repeat of it by the
    # supervisor as an escaped string, no traceback.
    assert all(line.startswith("[integration] ") for line in lines[:-1]), lines
    assert lines[-1].startswith("integration did not start (exit 5): cannot reach Elasticsearch")
    assert "Traceback" not in done.stderr.decode()


async def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    async with running_embedded(env, tmp_path / "up.log"):
        for _ in range(3):
            sent = await cli(env, "send", "--to", "ada@example.com", "--template", "welcome",
                             "--var", "name=Ada", "--var", "product=Acme")  # fmt: skip
            assert sent.returncode == 0, sent.stderr
        # `search | head -c 0`: the reader is gone before anything is written.
        read, write = trio.socket.socketpair()
        read.close()
        with write, trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, SUPERVISOR, "search"],
                env=env,
                stdout=write.fileno(),
                capture_stderr=True,
                check=False,
            )
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""


async def test_a_second_ctrl_c_stops_at_once_without_a_traceback(tmp_path: Path) -> None:
    # An SMTP server that takes connections and never answers: the demo's emails stay in
    # flight, so a graceful stop would wait; the second Ctrl-C must not.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        env = embedded_env(
            tmp_path,
            MAILACTORS__PROVIDER__KIND="smtp",
            MAILACTORS__PROVIDER__SMTP__HOST="127.0.0.1",
            MAILACTORS__PROVIDER__SMTP__PORT=str(hole.getsockname()[1]),
        )
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-u", SUPERVISOR, "--log-level", "INFO", "demo"],
            env=env,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stderr is not None
        seen = b""
        with trio.fail_after(60):
            while b"gRPC listening" not in seen:
                seen += await proc.stderr.receive_some()
            await trio.sleep(1)  # the samples reach the silent server
            proc.send_signal(signal.SIGINT)
            await trio.sleep(1)
            proc.send_signal(signal.SIGINT)
            started = trio.current_time()
            async for chunk in proc.stderr:
                seen += chunk
            await proc.wait()
            took = trio.current_time() - started
    err = seen.decode()
    assert proc.returncode == Exit.INTERRUPTED, err
    assert took < 10, f"the second Ctrl-C took {took:.1f}s"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted: 0 of 3 sample(s) done" in err


def test_explain_leaves_bugs_alone() -> None:
    assert explain(RuntimeError("a bug")) is None
    group = BaseExceptionGroup("tree", [ValueError("x"), ConfigError("store.url", "bad")])
    assert explain(group) == (Exit.CONFIG, "configuration error: store.url: bad")


def test_explain_names_the_port_setting() -> None:
    config = load_config("embedded", env={})
    error = OSError(98, "error while attempting to bind on address ('127.0.0.1', 9099): x")
    error.errno = 98
    status, line = explain(error, config) or (None, "")
    assert status is Exit.ADDRESS_IN_USE
    assert line.startswith("cannot listen on 127.0.0.1:9099: address already in use")


@pytest.mark.parametrize("argv", [["up", "--profile", "nope16"], ["--profile", "nope16", "up"]])
async def test_profile_before_or_after_the_command(argv: list[str], tmp_path: Path) -> None:
    done = await _run(embedded_env(tmp_path), *argv)
    assert done.returncode == Exit.CONFIG
    assert "no profile 'nope16'" in done.stderr.decode()
