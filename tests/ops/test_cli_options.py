"""supervisor.py's options as argparse reads them: help on every one, forgiving case for
statuses, a bad --limit named, the global options before or after the command."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta, timezone

import pytest

import supervisor


def test_every_option_and_argument_has_help() -> None:
    top = supervisor.parser()
    undocumented = [
        f"{parser.prog}: {action.dest}"
        for parser in [top, *supervisor.every_parser(top)]
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        and not action.help
    ]
    assert not undocumented


def test_search_status_in_any_case_and_dates() -> None:
    args = supervisor.parser().parse_args(
        ["search", "--status", "sent", "--since", "2026-12-01", "--until", "2026-12-01T17:00+01:00"]
    )
    assert args.status == "SENT"
    assert args.since == datetime(2026, 12, 1, tzinfo=UTC)
    assert args.until == datetime(2026, 12, 1, 17, tzinfo=timezone(timedelta(hours=1)))
    assert supervisor.parser().parse_args(["search", "--status", "Failed"]).status == "FAILED"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["search", "--limit", "-1"], "argument --limit: expected an integer >= 1, got -1"),
        (["search", "--since", "yesterday"], "argument --since: expected a date or time"),
        (["search", "--status", "lost"], "argument --status: invalid choice: 'LOST'"),
    ],
)
def test_bad_values_are_named(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        supervisor.parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def test_global_options_before_or_after_the_command() -> None:
    before = supervisor.parser().parse_args(["--profile", "distributed", "--debug", "up"])
    after = supervisor.parser().parse_args(["up", "--profile", "distributed", "--debug"])
    default = supervisor.parser().parse_args(["up"])
    assert before.profile == after.profile == "distributed" and before.debug and after.debug
    assert default.profile == "embedded" and not default.debug
    nested = supervisor.parser().parse_args(["dlq", "list", "--profile", "distributed"])
    assert nested.profile == "distributed"


def test_bench_help_explains_each_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        supervisor.parser().parse_args(["bench", "--help"])
    text = capsys.readouterr().out
    assert "see bench/suite.py" not in text
    for name in ("actor_hop", "embedded_e2e", "distributed_e2e", "latency", "memory"):
        assert f"\n  {name} " in text
