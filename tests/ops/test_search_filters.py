"""``supervisor.py search --tag/--meta`` held to the API's rules for tags and metadata: a
filter no email could match is named, one line on stderr, exit 2, before anything is asked."""

from __future__ import annotations

import socket

import pytest

import supervisor
from actors.domain.addressing import METADATA_KEY_PATTERN, TAG_PATTERN


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--tag", "bad tag"], f"error: --tag: must match ^{TAG_PATTERN.pattern}$, got 'bad tag'"),
        (["--tag", "ok", "--tag=.hidden"], "error: --tag: must match ^"),
        (["--tag", "t"] * 11, "error: --tag: 11 tags, more than 10"),
        (["--meta", "a.b=1"],
         f"error: --meta: key 'a.b' must match ^{METADATA_KEY_PATTERN.pattern}$"),
        (["--meta", "k=" + "v" * 300], "error: --meta 'k': is 300 characters, more than 256"),
        (["--meta", "k=a\x07b"], "error: --meta 'k': must not contain line breaks"),
        (["--meta", "novalue"], "error: --meta expects KEY=VALUE, got 'novalue'"),
    ],
)  # fmt: skip
def test_a_bad_tag_or_meta_is_named_with_exit_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        supervisor.main(["search", *argv])
    assert exit_info.value.code == 2
    out = capsys.readouterr()
    assert out.out == ""
    (said,) = out.err.splitlines()
    assert said.startswith(line), said


def test_good_filters_go_on_to_the_api(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MAILACTORS__GRPC__AUTH_PORT", str(port))  # embedded: both APIs
    status = supervisor.main(["search", "--tag", "receipt", "--meta", "order=42"])
    assert status == 5, capsys.readouterr().err  # checked, then no server: unavailable
    assert "no mailactors service" in capsys.readouterr().err
