"""``supervisor.py console`` against a running embedded ``up``, as an operator types it: the
snapshot in a pipe (nested reports flattened at 80 columns), pause and resume, and errors on
stderr with a non-zero exit."""

from __future__ import annotations

from pathlib import Path

from tests.support.embedded_process import cli, embedded_env, running_embedded


async def test_console_in_a_pipe_prints_one_snapshot_and_names_services_inside_embedded(
    tmp_path: Path,
) -> None:
    env = embedded_env(tmp_path, COLUMNS="80", LINES="24")
    async with running_embedded(env, tmp_path / "up.log"):
        # stdout is a pipe, not a terminal: one snapshot, then exit (never a silent hang).
        snapshot = await cli(env, "console")
        out = snapshot.stdout.decode()
        assert snapshot.returncode == 0, snapshot.stderr
        assert "embedded  pid" in out and "sender-0..15 (16)" in out
        assert max(len(line) for line in out.splitlines()) <= 80
        # Nested reports flattened, at 80 columns too: the status updater's outcomes.
        assert "outcomes.applied=" in out and "outcomes.not_found=" in out, out
        # A service of the one embedded process: that process answers.
        paused = await cli(env, "console", "email-server", "--pause")
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.decode().strip() == "embedded: intake paused"
        assert "email-server runs inside the embedded process" in paused.stderr.decode()
        resumed = await cli(env, "console", "email-server", "--resume")
        assert resumed.stdout.decode().strip() == "embedded: intake taking messages"
        # A name nothing answers to: the error says what is running.
        unknown = await cli(env, "console", "nope", "--pause")
        assert unknown.returncode == 1
        assert "for 'nope' (running there: embedded)" in unknown.stderr.decode()
        assert unknown.stdout == b""
        # An actor nothing has at that path: said on stderr, never stdout, exit 1.
        missing = await cli(env, "console", "--restart", "nope/x")
        assert missing.returncode == 1, missing
        assert missing.stdout == b""
        assert missing.stderr.decode().strip() == "no actor at 'nope/x' in embedded"
