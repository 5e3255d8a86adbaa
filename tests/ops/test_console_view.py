"""The console's live view at 80x24, as rich draws it (a recording console): no column one
letter wide, numbered siblings folded, the tree paged by keys, several instances summed up,
nested reports flattened (key.sub=value), lists shown short, all at 80 columns too."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console

from actors.ops.console import decode_keys
from actors.ops.console_view import Rates, View, render
from tests.support.console import actor, email_server_answer


def _draw(answers: Mapping[str, Any], view: View, width: int = 80, height: int = 24) -> str:
    console = Console(width=width, height=height, record=True, force_terminal=True)
    console.print(
        render(answers, {}, Rates(), "/run", width=width, height=height, view=view, keys=True)
    )
    return console.export_text()


def _fits(text: str, width: int = 80, height: int = 24) -> list[str]:
    lines = text.splitlines()
    assert len(lines) < height, f"{len(lines)} lines:\n{text}"
    assert max(len(line) for line in lines) <= width, text
    return lines


def test_one_instance_fits_80x24_with_senders_folded() -> None:
    crash = {"type": "SMTPServerDisconnected", "message": "Connection lost " * 10,
             "at": time.time()}  # fmt: skip
    answer = email_server_answer(senders=32, restarts=2, last_error=crash, mailbox_depth=5)
    lines = _fits(_draw({"email-server-0": answer}, View()))
    text = "\n".join(lines)
    assert "sender-0..31 (32)" in text and "sender-17" not in text
    folded = next(line for line in lines if "sender-0..31" in line)
    assert "5/2048" in folded and folded.rstrip(" │").endswith("2")  # depths and restarts summed
    # The error, too wide for a column at 80, is a line of its own, cut to the width.
    assert any("sender-3: SMTPServerDisconnected: Connection lost" in line for line in lines)
    assert "email.dead 2" in text and "email.send 120" in text
    assert "email.send.delay.* 0" in text and "delay.5s" not in text  # the tiers summed
    # Headers whole, never one letter per row.
    assert all(h in text for h in ("actor", "state", "depth", "msg/s", "processed", "restarts"))


def test_a_tree_longer_than_the_screen_pages_with_the_keys() -> None:
    answers = {"email-server-0": email_server_answer(senders=32)}
    view = View(expand=True)  # 39 rows: more than a screen
    first = _fits(_draw(answers, view))
    assert any("rows 1-" in line and "of 39" in line for line in first)
    assert any("email-server/" not in line and "publisher" in line for line in first)
    assert view.key("pgdn", list(answers))
    second = _fits(_draw(answers, view))
    assert not any("publisher" in line for line in second)
    assert any("sender-9" in line for line in second)
    view.key("pgdn", list(answers))
    view.key("pgdn", list(answers))
    view.key("pgdn", list(answers))
    last = "\n".join(_fits(_draw(answers, view)))
    assert "consumer" in last and "of 39" in last  # the end, and no further
    view.key("g", list(answers))
    assert view.offset == 0
    assert not view.key("q", list(answers))


def test_several_instances_are_one_row_each_and_a_number_opens_one() -> None:
    answers = {f"email-server-{i}": email_server_answer(f"email-server-{i}") for i in range(6)}
    view = View()
    text = "\n".join(_fits(_draw(answers, view)))
    assert "6 instances" in text
    assert all(f"email-server-{i}" in text for i in range(6))
    assert "sender" not in text  # the summary, not six trees
    assert "queued" in text and "email.send 120" in text
    view.key("3", list(answers))
    detail = "\n".join(_fits(_draw(answers, view)))
    assert "email-server-2  pid" in detail and "sender-0..31 (32)" in detail
    view.key("s", list(answers))
    assert view.selected is None


def test_rates_survive_a_redraw_of_the_same_snapshot() -> None:
    rates = Rates()
    before = email_server_answer(taken_at=100.0)["snapshot"]
    after = email_server_answer(taken_at=102.0, processed=10)["snapshot"]
    rates.update("w", before)
    assert rates.update("w", after)["email-server/senders/sender-3"] == 5.0
    assert rates.update("w", after)["email-server/senders/sender-3"] == 5.0


def test_keys_as_a_terminal_sends_them() -> None:
    assert decode_keys(b"jk\x1b[B\x1b[A\x1b[6~\x1b[5~ 2q\x1b") == [
        "j", "k", "down", "up", "pgdn", "pgup", " ", "2", "q", "esc",
    ]  # fmt: skip


def _with_reports(answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` plus a webhook dispatcher and an inbound SMTP endpoint, as they report."""
    endpoint = {"delivered": 3, "retried": 1, "failed": 0, "in_flight": 0, "breaker": "closed",
                "last_errors": ["timeout"]}  # fmt: skip
    answer["snapshot"]["actors"] += [
        actor("webhooks", "WebhookDispatcher",
              extra={"crm": endpoint, "audit": {**endpoint, "breaker": "open"}}),
        actor("bounces", "InboundEndpoint",
              extra={"listening": ["127.0.0.1:2525"], "connections_open": 1,
                     "inbound_smtp": {"feedback_bounce": 2, "ignored_repeat": 5,
                                      "messages": 7}}),
    ]  # fmt: skip
    return answer


NESTED = ("crm.delivered=3", "crm.retried=1", "crm.breaker=closed", "audit.breaker=open",
          "inbound_smtp.feedback_bounce=2", "inbound_smtp.ignored_repeat=5",
          "inbound_smtp.messages=7", "connections_open=1",
          "crm.last_errors=[timeout]", "listening=[127.0.0.1:2525]")  # fmt: skip


def test_nested_reports_are_flattened_within_80_columns() -> None:
    answers = {"email-server-0": _with_reports(email_server_answer(senders=4))}
    # Printed once (a pipe): every report, whole, as lines under the table.
    console = Console(width=80, record=True, force_terminal=True)
    console.print(render(answers, {}, Rates(), "/run", width=80, height=None))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert all(item in text for item in NESTED), text
    # Live at 80x24: paged, the report lines with their rows; every one is on some page.
    view = View(expand=True)
    seen = ""
    for _ in range(6):
        seen += "\n".join(_fits(_draw(answers, view)))
        view.key("pgdn", list(answers))
    assert all(item in seen for item in NESTED), seen
    # Wide: in the reports column, flattened the same way.
    wide = _draw(answers, View(), width=200, height=60)
    assert "crm.delivered=3" in wide and "inbound_smtp.messages=7" in wide


def test_long_lists_are_counted_with_their_first_few_within_80_columns() -> None:
    """A report's list: short ones whole (above), a long one as ``N items`` and its first
    three, each item cut, so that five long errors do not take the screen."""
    errors = [f"wh-{i}: timeout after 30s waiting for https://crm.example.com/hooks/{i}"
              for i in range(5)]  # fmt: skip
    answer = email_server_answer(senders=4)
    answer["snapshot"]["actors"] += [
        actor("webhooks", "WebhookDispatcher", extra={"crm": {"delivered": 1, "last_errors": errors,
                                                             "breaker": "open"}}),
        actor("integration", "Integration",
              extra={"unknown_emails": [f"ev-{i}" for i in range(40)], "idle": []}),
    ]  # fmt: skip
    answers = {"email-server-0": answer}
    for text in (_draw(answers, View(), height=40), _draw(answers, View(), width=200, height=40)):
        lines = _fits(text, width=len(text.splitlines()[0]), height=40)
        shown = "\n".join(lines)
        assert "unknown_emails=[40 items: ev-0, ev-1, ev-2, …]" in shown, shown
        assert "ev-3" not in shown
        assert "idle" not in shown  # an empty list: nothing to show
        assert "breaker=open" in shown  # what follows a list is still there
        assert "crm.last_errors=[5 items: wh-0: timeout" in shown and "wh-3" not in shown
        assert "waiting for htt…, wh-1:" in shown  # each item cut to 40 characters
    wide = _draw(answers, View(), width=200, height=40)
    assert "[5 items: wh-0: timeout after 30s waiting for htt…, wh-1: timeout" in wide
