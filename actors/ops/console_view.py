"""The console's live view, laid out for the terminal it is drawn on.

Pure rendering, from the control endpoints' answers to rich renderables; no I/O.

* One instance: its actor tree, one row per actor, siblings that differ only by their
  number (``sender-0`` .. ``sender-31``) folded into one row with their sums unless
  ``expand``; the columns that fit the width (the mailbox bar, reports and last error
  need a wide terminal; on a narrow one the errors come as lines under the table); the
  reports, nested maps flattened to ``key.sub=value`` and lists short (``key=[a, b]``,
  ``key=[40 items: a, b, c, …]``), in their column or, when it is
  missing or too narrow, whole as lines under the rows shown; as many rows (with their report
  lines) as fit the height, from ``View.offset`` (the keys scroll it).
* Several instances: one summary row each, numbered, paged to the height like the tree;
  n/p (or the arrows) move the highlighted row, Enter shows it (1-9 show that one at once);
  showing one, n/p go to the next or previous instance.
* The bus queues and throttle buckets as wrapped lines, not tables.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

__all__ = ["KEYS_HELP", "PICK_HELP", "Rates", "View", "ago", "render", "tree_order"]

STATE_STYLES = {
    "running": "green",
    "starting": "cyan",
    "restarting": "yellow",
    "stopping": "magenta",
    "stopped": "red",
}
KEYS_HELP = "↑↓ or j/k scroll, PgUp/PgDn page"
PICK_HELP = "n/p or ↑↓ pick, Enter shows it"
_NUMBERED = re.compile(r"^(.*)-(\d+)$")
# Widths (of the whole terminal) from which the wider columns are drawn.
BAR_FROM, REPORTS_FROM, ERROR_FROM = 110, 130, 160
MAX_ERROR_LINES = 3


class Rates:
    """Messages per second per actor: the difference of ``processed`` between two snapshots.

    Asked again for the same snapshot (a redraw after a key), it answers the same."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, dict[str, int]]] = {}
        self._rates: dict[str, dict[str, float]] = {}

    def update(self, instance: str, snapshot: Mapping[str, Any]) -> dict[str, float]:
        taken_at = float(snapshot["taken_at"])
        previous = self._last.get(instance)
        if previous is not None and taken_at == previous[0]:
            return self._rates.get(instance, {})
        processed = {a["path"]: int(a["processed"]) for a in snapshot["actors"]}
        self._last[instance] = (taken_at, processed)
        if previous is None or taken_at < previous[0]:
            self._rates[instance] = {}
            return {}
        elapsed = taken_at - previous[0]
        rates = {
            path: max(0, n - previous[1].get(path, n)) / elapsed for path, n in processed.items()
        }
        self._rates[instance] = rates
        return rates


@dataclass
class View:
    """What the live view shows: every instance's summary (``selected`` None) or one, and
    from which row of a tree longer than the screen."""

    selected: str | None = None
    offset: int = 0
    expand: bool = False
    cursor: int = 0  # the highlighted row of the summary
    page: int = field(default=10, repr=False)  # rows a page key moves; set at each draw

    def key(self, key: str, instances: Sequence[str]) -> bool:
        """Apply one key; False for quit."""
        if key in ("q", "Q"):
            return False
        if self.selected is None and len(instances) > 1 and self._pick(key, instances):
            return True
        if key in ("n", "p") and self.selected in instances:
            step = 1 if key == "n" else -1
            at = (instances.index(self.selected) + step) % len(instances)
            self.selected, self.offset, self.cursor = instances[at], 0, at
        elif key in ("down", "j"):
            self.offset += 1
        elif key in ("up", "k"):
            self.offset = max(0, self.offset - 1)
        elif key in ("pgdn", " "):
            self.offset += self.page
        elif key in ("pgup", "b"):
            self.offset = max(0, self.offset - self.page)
        elif key in ("home", "g"):
            self.offset = 0
        elif key == "e":
            self.expand = not self.expand
        elif key in ("s", "0", "esc"):
            self.selected, self.offset = None, 0
        elif key.isdigit() and 1 <= int(key) <= len(instances):
            self.selected, self.offset = instances[int(key) - 1], 0
            self.cursor = int(key) - 1
        return True

    def _pick(self, key: str, instances: Sequence[str]) -> bool:
        """The summary's keys: move the highlighted row, open it. False: not one of them."""
        page = self.page
        moves = {"down": 1, "j": 1, "n": 1, "up": -1, "k": -1, "p": -1,
                 "pgdn": page, " ": page, "pgup": -page, "b": -page}  # fmt: skip
        if key in moves:
            self.cursor = max(0, min(len(instances) - 1, self.cursor + moves[key]))
        elif key in ("home", "g"):
            self.cursor = 0
        elif key == "enter":
            self.cursor = min(self.cursor, len(instances) - 1)
            self.selected, self.offset = instances[self.cursor], 0
        else:
            return False
        return True


def ago(at: float) -> str:
    seconds = max(0.0, time.time() - at)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


# A list in a report (addresses listened on, a webhook endpoint's last errors, integration's
# unknown emails): up to LIST_SHOWN items whole, a longer one counted with its first few; each
# item cut to LIST_ITEM_CHARS, so that one long error cannot take the screen (--json has all).
LIST_SHOWN = 3
LIST_ITEM_CHARS = 40


def _list_text(items: Sequence[Any]) -> str:
    def cut(item: Any) -> str:
        text = " ".join(str(item).split())  # an error's line breaks would break the layout
        return text if len(text) <= LIST_ITEM_CHARS else text[: LIST_ITEM_CHARS - 1] + "…"

    shown = ", ".join(cut(item) for item in items[:LIST_SHOWN])
    if len(items) <= LIST_SHOWN:
        return f"[{shown}]"
    return f"[{len(items)} items: {shown}, …]"


def _report_items(extra: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key=value`` for each value an actor reports, nested maps flattened (``key.sub=value``:
    the webhook dispatcher's per-endpoint counts, the inbound endpoint's per-outcome ones), lists
    as ``key=[a, b]`` or ``key=[12 items: a, b, c, …]`` (an empty one left out: nothing to see).
    The throttler's buckets have a line of their own."""
    parts = []
    for key, value in extra.items():
        if (not prefix and key == "buckets") or (isinstance(value, list) and not value):
            continue
        if isinstance(value, Mapping):
            parts += _report_items(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            parts.append(f"{prefix}{key}={_list_text(value)}")
        else:
            parts.append(f"{prefix}{key}={value}")
    return parts


def _report_text(extra: Mapping[str, Any] | None) -> str:
    return " ".join(_report_items(extra)) if extra else ""


# What the columns but actor, reports and last error take, borders and padding included, at
# most: the rest is shared by those (ratio 1 each), so a report this long fits its column.
_FIXED_COLUMNS = 80


def _report_room(width: int) -> int:
    """Cells of the reports column, at least (0: there is none)."""
    if width < REPORTS_FROM:
        return 0
    return max(0, width - _FIXED_COLUMNS) // (3 if width >= ERROR_FROM else 2)


def _wrap_words(words: Sequence[str], width: int, indent: int = 4) -> list[str]:
    """``words`` packed into lines of at most ``width`` cells, continuation lines indented
    (a word longer than a line gets one of its own, cut by the caller's ellipsis)."""
    lines: list[str] = []
    line = ""
    for word in words:
        if line and cell_len(line) + 1 + cell_len(word) > width:
            lines.append(line)
            line = " " * indent + word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines


def tree_order(actors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parents before their children, siblings in the order they were registered (started)."""
    index = {a["path"]: i for i, a in enumerate(actors)}

    def key(a: Mapping[str, Any]) -> list[int]:
        parts = a["path"].split("/")
        return [index.get("/".join(parts[: i + 1]), -1) for i in range(len(parts))]

    return sorted(actors, key=key)


@dataclass
class Row:
    """One line of the actor table: an actor, or numbered siblings folded together."""

    label: str
    depth_level: int
    supervisor: bool
    states: dict[str, int]
    depth: int
    capacity: int
    rate: float | None
    processed: int
    restarts: int
    report: str
    error: tuple[str, dict[str, Any]] | None  # (name, last_error)

    @property
    def state(self) -> str:
        if len(self.states) == 1:
            return next(iter(self.states))
        return ", ".join(f"{n} {s}" for s, n in sorted(self.states.items()) if s != "running")


def _row(a: Mapping[str, Any], rates: Mapping[str, float]) -> Row:
    path = a["path"]
    name = path.rsplit("/", 1)[-1]
    error = a.get("last_error")
    return Row(
        label=name,
        depth_level=path.count("/"),
        supervisor=a["kind"] == "supervisor",
        states={a["state"]: 1},
        depth=int(a["mailbox_depth"]),
        capacity=int(a["mailbox_capacity"]),
        rate=rates.get(path),
        processed=int(a["processed"]),
        restarts=int(a["restarts"]),
        report=_report_text(a.get("extra")),
        error=(name, error) if error else None,
    )


def _fold(group: list[tuple[Mapping[str, Any], Row]]) -> Row:
    first, last = group[0][1], group[-1][1]
    states: dict[str, int] = {}
    for _, r in group:
        for s, n in r.states.items():
            states[s] = states.get(s, 0) + n
    errors = [r.error for _, r in group if r.error is not None]
    rates = [r.rate for _, r in group if r.rate is not None]
    return Row(
        label=f"{first.label}..{last.label.rsplit('-', 1)[-1]} ({len(group)})",
        depth_level=first.depth_level,
        supervisor=False,
        states=states,
        depth=sum(r.depth for _, r in group),
        capacity=sum(r.capacity for _, r in group),
        rate=sum(rates) if rates else None,
        processed=sum(r.processed for _, r in group),
        restarts=sum(r.restarts for _, r in group),
        report="",
        error=max(errors, key=lambda e: float(e[1]["at"])) if errors else None,
    )


def actor_rows(
    actors: list[dict[str, Any]], rates: Mapping[str, float], expand: bool = False
) -> list[Row]:
    """The table's rows in tree order; runs of numbered leaf siblings of one kind folded."""
    ordered = tree_order(actors)
    parents = {a["path"].rsplit("/", 1)[0] for a in ordered if "/" in a["path"]}
    rows: list[Row] = []
    run: list[tuple[Mapping[str, Any], Row]] = []

    def run_key(a: Mapping[str, Any]) -> tuple[str, str, str] | None:
        path = a["path"]
        match = _NUMBERED.match(path.rsplit("/", 1)[-1])
        if expand or match is None or path in parents:
            return None
        return path.rsplit("/", 1)[0] if "/" in path else "", match.group(1), a["kind"]

    def flush() -> None:
        if len(run) > 3:
            rows.append(_fold(run))
        else:
            rows.extend(r for _, r in run)
        run.clear()

    for a in ordered:
        key = run_key(a)
        if run and (key is None or key != run_key(run[-1][0])):
            flush()
        if key is None:
            rows.append(_row(a, rates))
        else:
            run.append((a, _row(a, rates)))
    flush()
    return rows


def _actor_table(rows: Sequence[Row], width: int) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, collapse_padding=True)
    table.add_column("actor", no_wrap=True, overflow="ellipsis", ratio=1, min_width=12)
    table.add_column("state", no_wrap=True, overflow="ellipsis", max_width=12)
    if width >= BAR_FROM:
        table.add_column("mailbox", no_wrap=True, width=12)
    table.add_column("depth", justify="right", no_wrap=True)
    table.add_column("msg/s", justify="right", no_wrap=True)
    table.add_column("processed", justify="right", no_wrap=True)
    table.add_column("restarts", justify="right", no_wrap=True)
    if width >= REPORTS_FROM:
        table.add_column("reports", no_wrap=True, overflow="ellipsis", ratio=1)
    if width >= ERROR_FROM:
        table.add_column("last error", no_wrap=True, overflow="ellipsis", ratio=1)
    for r in rows:
        cells: list[RenderableType] = [
            Text("  " * r.depth_level + r.label, style="bold" if r.supervisor else ""),
            Text(r.state, style=STATE_STYLES.get(r.state, "yellow")),
        ]
        if width >= BAR_FROM:
            cells.append(
                ProgressBar(total=r.capacity, completed=r.depth, width=12)
                if r.capacity
                else Text("")
            )
        cells += [
            f"{r.depth}/{r.capacity}" if r.capacity else "",
            "-" if r.rate is None else f"{r.rate:,.1f}",
            f"{r.processed:,}",
            Text(str(r.restarts), style="yellow" if r.restarts else ""),
        ]
        if width >= REPORTS_FROM:
            cells.append(r.report)
        if width >= ERROR_FROM:
            cells.append(Text(_error_text(r.error), style="red") if r.error else Text(""))
        table.add_row(*cells)
    return table


def _error_text(error: tuple[str, dict[str, Any]] | None) -> str:
    if error is None:
        return ""
    e = error[1]
    return f"{e['type']}: {e['message']} ({ago(e['at'])})"


def _line(text: Text) -> Text:
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def _queues_text(info: Mapping[str, Any]) -> Text | None:
    queues = info.get("queues")
    if queues is None:
        error = info.get("queues_error")
        return Text(f"queues: {error}", style="red") if error else None
    dlq = info.get("dead_letter_queue")
    text = Text.assemble(("queues: ", "bold"))
    # The retry delay queues (one per tier) as one entry: their sum (--json has each).
    shown: dict[str, int] = {}
    for name, depth in queues.items():
        base, sep, _tier = name.rpartition(".delay.")
        key = f"{base}.delay.*" if sep else name
        shown[key] = shown.get(key, 0) + int(depth)
    for i, (name, depth) in enumerate(sorted(shown.items())):
        if i:
            text.append("  ")
        text.append(f"{name} {depth}", style="red" if name == dlq and depth else "")
    return text


def _throttle_text(snapshot: Mapping[str, Any]) -> Text | None:
    text = Text.assemble(("throttle: ", "bold"))
    throttlers = 0
    for a in snapshot["actors"]:
        extra = a.get("extra") or {}
        buckets = extra.get("buckets")
        if not isinstance(buckets, dict):
            continue
        throttlers += 1
        text.append(f"waits {extra.get('waits', 0)}")
        for name, b in buckets.items():
            tokens = float(b.get("tokens", 0))
            text.append(f"  {name} {b.get('rate', 0):g}/s burst {b.get('burst', 0):g} tokens ")
            text.append(f"{tokens:.1f}", style="yellow" if tokens < 0 else "")
            text.append(f" waiting {b.get('waiting', 0)}")
        if not buckets:
            text.append("  no limits configured", style="dim")
    return text if throttlers else None


def render_instance(
    name: str,
    answer: Mapping[str, Any],
    rates: Mapping[str, float],
    *,
    width: int = 200,
    height: int | None = None,
    view: View | None = None,
) -> Panel:
    view = view if view is not None else View()
    snapshot = answer["snapshot"]
    info = answer.get("info") or {}
    intake = answer.get("intake") or {}
    title = Text.assemble((name, "bold"), f"  pid {answer.get('pid')}")
    if intake.get("paused"):
        title.append("  INTAKE PAUSED", style="bold yellow")
    header = Text(f"{len(snapshot['actors'])} actors, dead letters {snapshot['dead_letters']}")
    if info.get("metrics"):
        header.append(f", metrics {info['metrics']}")
    rows = actor_rows(snapshot["actors"], rates, view.expand)
    inner = max(1, width - 4)  # within the panel's borders and padding
    # A report the reports column cannot hold whole (narrower than REPORTS_FROM, none at all)
    # comes as lines under the table, after the rows shown: whole, never cut.
    room = _report_room(width)
    reports = [
        _wrap_words([f"{r.label}:", *r.report.split(" ")], inner)
        if r.report and cell_len(r.report) > room
        else []
        for r in rows
    ]
    rows = [replace(r, report="") if lines else r for r, lines in zip(rows, reports, strict=True)]
    below: list[Text] = [t for t in (_throttle_text(snapshot), _queues_text(info)) if t is not None]
    if width < ERROR_FROM:
        with_errors = sorted(
            (r.error for r in rows if r.error is not None), key=lambda e: -float(e[1]["at"])
        )
        for label, _ in with_errors[:MAX_ERROR_LINES]:
            below.append(_line(Text(f"{label}: {_error_text((label, _))}", style="red")))
    start, end = 0, len(rows)
    more: Text | None = None
    if height is not None:
        # Panel borders (2), header (1), the table's blank top, head, rule and bottom (4).
        lines_below = sum(
            1 if t.no_wrap else max(1, math.ceil(cell_len(t.plain) / inner)) for t in below
        )
        room = max(3, height - 7 - lines_below)  # for rows and their report lines
        costs = [1 + len(lines) for lines in reports]
        if sum(costs) > room:
            room = max(2, room - 1)  # the line that says which rows these are
            last_start, used = len(rows), 0  # the last page starts here, and is full
            while last_start > 0 and used + costs[last_start - 1] <= room:
                last_start -= 1
                used += costs[last_start]
            start = min(view.offset, last_start)
            end, used = start, 0
            while end < len(rows) and (end == start or used + costs[end] <= room):
                used += costs[end]
                end += 1
            fold = "fold siblings" if view.expand else "one row each"
            more = _line(
                Text(f"rows {start + 1}-{end} of {len(rows)}: {KEYS_HELP}, e {fold}", style="dim")
            )
        view.offset = start
        view.page = max(1, end - start)
    shown = rows[start:end]
    parts: list[RenderableType] = [_line(header), _actor_table(shown, width)]
    for lines in reports[start:end]:
        parts += [_line(Text(line)) for line in lines]
    if more is not None:
        parts.append(more)
    parts += [_line(t) if t.style == "red" else t for t in below]
    return Panel(Group(*parts), title=title, title_align="left", border_style="blue")


def render_summary(
    answers: Mapping[str, Any],
    rates: Mapping[str, Mapping[str, float]],
    width: int,
    height: int | None = None,
    view: View | None = None,
) -> RenderableType:
    """One row per instance, as many as fit ``height`` (the page that holds ``view.cursor``,
    highlighted); the bus queues once (they are the same seen from any)."""
    view = view if view is not None else View()
    names = list(answers)
    view.cursor = max(0, min(view.cursor, len(names) - 1))
    queues: Text | None = None
    for answer in answers.values():
        queues = _queues_text(answer.get("info") or {})
        if queues is not None:
            break
    first, shown, more = 0, names, None
    if height is not None:
        # Panel borders (2), the table's blank top, head, rule and bottom (4), the queues.
        inner = max(1, width - 4)
        below = max(1, math.ceil(cell_len(queues.plain) / inner)) if queues is not None else 0
        fit = max(3, height - 6 - below)
        if len(names) > fit:
            fit -= 1  # the line that says which rows these are
            first = view.cursor // fit * fit
            shown = names[first : first + fit]
            more = _line(Text(f"rows {first + 1}-{first + len(shown)} of {len(names)}: "
                              f"{PICK_HELP}, PgUp/PgDn page", style="dim"))  # fmt: skip
        view.page = max(1, fit)
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, collapse_padding=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("instance", no_wrap=True, overflow="ellipsis", ratio=1, min_width=10)
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("actors", justify="right", no_wrap=True)
    table.add_column("queued", justify="right", no_wrap=True)
    table.add_column("msg/s", justify="right", no_wrap=True)
    table.add_column("processed", justify="right", no_wrap=True)
    table.add_column("restarts", justify="right", no_wrap=True)
    if width >= REPORTS_FROM:
        table.add_column("last error", no_wrap=True, overflow="ellipsis", ratio=2)
    for i, name in enumerate(shown, start=first + 1):
        answer = answers[name]
        actors = answer["snapshot"]["actors"]
        running = sum(a["state"] == "running" for a in actors)
        instance_rates = rates.get(name, {})
        errors = [(a["path"], a["last_error"]) for a in actors if a.get("last_error")]
        label = Text(name, style="bold")
        if (answer.get("intake") or {}).get("paused"):
            label.append(" PAUSED", style="yellow")
        restarts = sum(int(a["restarts"]) for a in actors)
        cells: list[RenderableType] = [
            str(i),
            label,
            str(answer.get("pid")),
            Text(f"{running}/{len(actors)}", style="" if running == len(actors) else "yellow"),
            f"{sum(int(a['mailbox_depth']) for a in actors):,}",
            f"{sum(instance_rates.values()):,.1f}" if instance_rates else "-",
            f"{sum(int(a['processed']) for a in actors):,}",
            Text(str(restarts), style="yellow" if restarts else ""),
        ]
        if width >= REPORTS_FROM:
            latest = max(errors, key=lambda e: float(e[1]["at"])) if errors else None
            cells.append(Text(_error_text(latest), style="red") if latest else "")
        picked = height is not None and i - 1 == view.cursor
        table.add_row(*cells, style="reverse" if picked else None)
    parts: list[RenderableType] = [table]
    if more is not None:
        parts.append(more)
    if queues is not None:
        parts.append(queues)
    return Panel(
        Group(*parts),
        title=Text(f"{len(answers)} instances", style="bold"),
        title_align="left",
        border_style="blue",
    )


def render(
    answers: Mapping[str, Any],
    errors: Mapping[str, str],
    rates: Rates,
    where: str,
    *,
    width: int = 200,
    height: int | None = None,
    view: View | None = None,
    keys: bool = False,
) -> RenderableType:
    """The whole view. ``height`` None: everything (a snapshot printed once); else what
    fits, ``view`` choosing the instance and the first row."""
    view = view if view is not None else View()
    all_rates = {name: rates.update(name, a["snapshot"]) for name, a in answers.items()}
    panels: list[RenderableType] = []
    selected = view.selected if view.selected in answers else None
    if len(answers) > 1 and selected is None and height is not None:
        room = height - 2 - len(errors)  # the footer, the error lines, a last line free
        panels.append(render_summary(answers, all_rates, width, room, view))
        hint = f"{PICK_HELP}, 1-9" if keys else "console NAME shows one instance"
        footer_extra = f"; {hint}"
    else:
        shown = {selected: answers[selected]} if selected else answers
        each = None if height is None else max(10, (height - 2 - len(errors)) // len(shown or {1}))
        for name, answer in shown.items():
            panels.append(
                render_instance(name, answer, all_rates[name], width=width, height=each, view=view)
            )
        footer_extra = "; n/p next/previous, s: all" if selected and keys else ""
    for name, error in errors.items():
        panels.append(_line(Text(f"{name}: {error}", style="red")))
    if not answers and not errors:
        panels.append(Text(f"no running service found in {where}", style="yellow"))
    stamp = time.strftime("%H:%M:%S")
    quit_hint = "q or Ctrl-C to quit" if keys else "Ctrl-C to quit"
    panels.append(
        _line(Text(f"{stamp}  {len(answers)} running  ({quit_hint}{footer_extra})", style="dim"))
    )
    return Group(*panels)
