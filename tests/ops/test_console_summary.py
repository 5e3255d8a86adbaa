"""The console's summary of many processes at 80x24 (rich's recording console): paged to the
height, any process picked by n/p and Enter (not only 1-9), n/p moving between processes
once one is shown; and no running service said on stderr with a non-zero exit."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from actors.ops.console import decode_keys
from actors.ops.console_view import Rates, View, render
from tests.support.console import email_server_answer
from tests.support.embedded_process import cli, embedded_env

WIDTH, HEIGHT = 80, 24
ROW = re.compile(r"^│\s+(\d+)\s+(email-server-\d+)\s")  # '#' and instance columns
REVERSE = "\x1b[7m"  # the highlighted row


def _draw(answers: Mapping[str, Any], view: View) -> tuple[list[str], list[str]]:
    """The lines drawn, and the instances on highlighted rows."""
    console = Console(width=WIDTH, height=HEIGHT, record=True, force_terminal=True)
    console.print(render(answers, {}, Rates(), "/run", width=WIDTH, height=HEIGHT, view=view,
                         keys=True))  # fmt: skip
    styled = console.export_text(styles=True, clear=False).splitlines()
    lines = console.export_text().splitlines()
    assert len(lines) < HEIGHT, "\n".join(lines)
    assert max(len(line) for line in lines) <= WIDTH, "\n".join(lines)
    highlighted = [
        m.group(2) for plain, ansi in zip(lines, styled, strict=True)
        if (m := ROW.match(plain)) and REVERSE in ansi
    ]  # fmt: skip
    return lines, highlighted


def _rows(lines: list[str]) -> list[str]:
    return [m.group(2) for line in lines if (m := ROW.match(line))]


def test_a_summary_of_30_processes_is_paged_and_any_one_can_be_picked() -> None:
    names = [f"email-server-{i}" for i in range(30)]
    answers = {name: email_server_answer(name, senders=4) for name in names}
    view = View()
    first, highlighted = _draw(answers, view)
    shown = _rows(first)
    assert 5 <= len(shown) < 30 and shown == names[: len(shown)]  # a page, in order
    text = "\n".join(first)
    assert f"rows 1-{len(shown)} of 30" in text and "n/p or ↑↓ pick" in text
    assert highlighted == ["email-server-0"]

    # n past the page's end turns the page; the highlighted row is the one n reached.
    for _ in range(len(shown)):
        assert view.key("n", names)
    lines, highlighted = _draw(answers, view)
    second = _rows(lines)
    assert second[0] == names[len(shown)] and "email-server-0" not in second
    assert highlighted == [names[len(shown)]]
    # Down to the last one (no further), PgUp a page back, p one up.
    for _ in range(40):
        view.key("pgdn", names)
    lines, highlighted = _draw(answers, view)
    assert _rows(lines)[-1] == "email-server-29" and highlighted == ["email-server-29"]
    view.key("p", names)
    assert _draw(answers, view)[1] == ["email-server-28"]

    # Enter shows the highlighted one: #29, which no digit key reaches.
    view.key("enter", names)
    detail = "\n".join(_draw(answers, view)[0])
    assert view.selected == "email-server-28" and "email-server-28  pid" in detail
    assert "n/p next/previous" in detail
    # Shown, n and p go to the neighbours (round the end); s is the summary again.
    view.key("n", names)
    assert view.selected == "email-server-29"
    view.key("n", names)
    assert view.selected == "email-server-0"
    view.key("p", names)
    assert view.selected == "email-server-29"
    view.key("s", names)
    assert view.selected is None
    assert _draw(answers, view)[1] == ["email-server-29"]


def test_a_summary_that_fits_is_not_paged() -> None:
    answers = {f"email-server-{i}": email_server_answer(f"email-server-{i}") for i in range(4)}
    lines, _ = _draw(answers, View())
    assert _rows(lines) == list(answers) and "rows 1-" not in "\n".join(lines)


def test_enter_is_a_key() -> None:
    assert decode_keys(b"nn\rp\n") == ["n", "n", "enter", "p", "enter"]


async def test_no_running_service_is_said_on_stderr_with_a_non_zero_exit(tmp_path: Path) -> None:
    env = embedded_env(tmp_path, COLUMNS="80", LINES="24")
    for args in (["console"], ["console", "--json"], ["console", "--pause"],
                 ["console", "--restart", "x/y"]):  # fmt: skip
        done = await cli(env, *args)
        assert done.returncode == 1, args
        assert done.stdout == b"", (args, done.stdout)
        (line,) = done.stderr.decode().splitlines()
        assert line == f"no running service found in {tmp_path / 'run'}", args
