"""The web view's routes: one Starlette app mounted at ``/web`` on the process's HTTP server.

Everything under ``/web`` goes through the session and security-header middleware; the
pages are jinja2 templates with autoescape on (subjects, variables, bodies and replies
are the attacker's text); the one script is ``static/app.js`` (no inline script, no CDN).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import msgspec
import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from actors.domain.addressing import check_metadata, check_tags
from actors.domain.edges import SearchQuery, Store
from actors.domain.schema import EmailDocument, Status
from actors.domain.templates import TemplateError, TemplateRenderer
from actors.web.access import FRAME_CSP, Access, SecurityHeaders, csrf_token
from actors.web.charts import INTERVAL, Charts
from actors.web.mail import mime_source, new_nonce, render, resend, resent_from
from actors.web.tree import Trees
from config import Config
from runtime import Actor, ActorSystem

log = logging.getLogger("mailactors.web")

__all__ = ["PREFIX", "web_routes"]

PREFIX = "/web"
HERE = Path(__file__).resolve().parent
PAGE_SIZES = (20, 50, 100, 200)
# The email log form's fields.
LOG_FIELDS = ("recipient", "status", "category", "template", "subject", "tags", "meta",
              "from", "to", "order", "size", "page")  # fmt: skip
SESSION_HOURS = 8
TREE_EVERY = 1.0  # seconds between two tree events


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name: all of it is HTML
        undefined=jinja2.StrictUndefined,
    )
    env.globals["prefix"] = PREFIX
    # For text shown on the page (autoescape escapes it), not jinja's tojson, which is for
    # <script> blocks: it wrote "Ada \u00fcn\u00ef" and "\u003c" for what was sent.
    env.filters["json_text"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


def _parse_time(value: str, field: str) -> datetime | None:
    """A ``datetime-local`` input (or ISO 8601), taken as UTC when it has no zone."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{field}: not a date and time: {value!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _parse_tags(value: str) -> tuple[str, ...]:
    """The form's tags field: comma-separated; an email must carry every one."""
    return tuple(t for t in (part.strip() for part in value.split(",")) if t)


def _parse_metadata(value: str) -> dict[str, str]:
    """The form's metadata field: comma-separated ``key=value`` pairs, all of which must match."""
    out: dict[str, str] = {}
    for pair in (part.strip() for part in value.split(",")):
        if not pair:
            continue
        key, sep, val = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"metadata: expects key=value, got {pair!r}")
        if key in out:
            raise ValueError(f"metadata: {key!r} given twice")
        out[key] = val.strip()
    return out


def _when(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z" if dt else ""


def sample_variables(renderer: TemplateRenderer, name: str) -> dict[str, str]:
    """Placeholder values for a template's variables: the name of each, in brackets."""
    return {v: f"[{v}]" for v in sorted(renderer.variables(name))}


class WebView:
    """The state behind the pages of one process: config, store, renderer, trees, login."""

    def __init__(self, config: Config, store: Store, actor: Actor[Any]) -> None:
        self.config = config
        self.store = store  # what it reads through, until a reader of its own is open
        self.actor = actor
        self.renderer = TemplateRenderer(config.templates.dir)
        self.access = Access(config.grpc.token())
        system = actor.ctx.system
        assert isinstance(system, ActorSystem)
        self.system = system
        own = "embedded" if config.bus.kind == "memory" else "integration"
        # The process's metrics, when its store is metered (``up``; not a bare open_embedded).
        metrics = getattr(store, "metrics", None)
        samples = getattr(metrics, "chart_samples", None)
        commands = {"metrics": samples} if samples is not None else None
        self.trees = Trees(config, system, own, commands)
        self.env = _environment()
        self.login_page = f"{PREFIX}/login"
        # Summed over every process: the latency is observed where emails are sent.
        self.charts = Charts(self.trees.metric_samples) if samples is not None else None
        if self.charts is not None:
            actor.ctx.start_soon(self.charts.run)  # sampled for the server's lifetime
        if config.store.kind == "sqlite":
            actor.ctx.start_soon(self._own_reader)

    async def _own_reader(self) -> None:
        """A SQLite connection of the web view's own, for as long as the server runs.

        The store's one connection is shared with integration's writer and serialized: a
        search that scans (a template filter over 100,000 documents takes about a second)
        would hold the writer up meanwhile. In WAL mode a second connection reads beside
        the writer without blocking it.
        """
        from actors.stores.sqlite import SqliteStore

        shared = self.store
        reader = SqliteStore(self.config.store.sqlite_path)
        await reader.open()
        try:
            self.store = reader
            await trio.sleep_forever()
        finally:
            self.store = shared
            with trio.CancelScope(shield=True):
                await reader.close()

    # -- plumbing ----------------------------------------------------------------

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        html = self.env.get_template(name).render(
            csrf=csrf_token(request), logged_in=self.access.logged_in(request), **context
        )
        return HTMLResponse(html, status_code=status)

    def guarded(self, fn: Any) -> Any:
        return self.access.guard(fn, login_page=self.login_page)

    # -- login -------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self.page(request, "login.html", secret=self.access.secret is not None, error="")

    async def login(self, request: Request) -> Response:
        if not await self.access.csrf_ok(request):
            return PlainTextResponse("missing or wrong CSRF token", status_code=403)
        form = await request.form()
        given = form.get("secret")
        if not self.access.may_enter(request, given if isinstance(given, str) else ""):
            await trio.sleep(0.5)  # a guesser gets two tries a second per connection
            return self.page(
                request, "login.html", status=401, secret=self.access.secret is not None,
                error="wrong secret" if self.access.secret else "only from this machine",
            )  # fmt: skip
        self.access.enter(request)
        return RedirectResponse(f"{PREFIX}/emails", status_code=303)

    async def logout(self, request: Request) -> Response:
        self.access.leave(request)
        return RedirectResponse(self.login_page, status_code=303)

    # -- the email log -----------------------------------------------------------

    def _query(self, request: Request) -> tuple[SearchQuery, dict[str, str]]:
        q = request.query_params
        form = {k: q.get(k, "").strip() for k in LOG_FIELDS}
        status = None
        if form["status"]:
            try:
                status = Status(form["status"])
            except ValueError:
                raise ValueError(f"status: not a status: {form['status']!r}") from None
        size = int(form["size"]) if form["size"].isdigit() else 50
        if size not in PAGE_SIZES:
            size = 50
        query = SearchQuery(
            recipient=form["recipient"] or None,
            status=status,
            category=form["category"] or None,
            template=form["template"] or None,
            subject_text=form["subject"] or None,
            # The API's rules (InvalidField names the field): a filter no email could match
            # is a mistake to show, not an empty log.
            tags=tuple(check_tags(_parse_tags(form["tags"]))),
            metadata=check_metadata(_parse_metadata(form["meta"])),
            created_from=_parse_time(form["from"], "from"),
            created_to=_parse_time(form["to"], "to"),
            oldest_first=form["order"] == "oldest",
            page_size=size,
            page_token=form["page"],
        )
        return query, form

    async def status_counts(self, query: SearchQuery) -> dict[str, int]:
        """Matches per status (every status the system knows), the other filters applied."""
        found = await self.store.count_by_status(query)
        return {status.value: found.get(status, 0) for status in Status}

    async def emails(self, request: Request) -> Response:
        try:
            query, form = self._query(request)
            page = await self.store.search(query)
        except ValueError as exc:
            # The form as sent, so the user sees what to correct (the template needs every field).
            form = {k: request.query_params.get(k, "") for k in LOG_FIELDS}
            return self.page(request, "emails.html", status=400, error=str(exc), form=form,
                             statuses=[s.value for s in Status], docs=[], counts={},
                             total=0, next_page="", sizes=PAGE_SIZES)  # fmt: skip
        counts = await self.status_counts(query)
        next_params = {k: v for k, v in form.items() if v and k != "page"}
        next_page = ""
        if page.next_page_token:
            next_params["page"] = page.next_page_token
            next_page = str(request.url.include_query_params(**next_params))
        return self.page(
            request, "emails.html", error="", form=form, statuses=[s.value for s in Status],
            docs=[self._row(d) for d in page.documents], counts=counts, total=page.total,
            next_page=next_page, sizes=PAGE_SIZES,
        )  # fmt: skip

    def _row(self, doc: EmailDocument) -> dict[str, Any]:
        return {
            "event_id": doc.event_id,
            "created": _when(doc.created_at),
            "status": doc.status.value,
            "recipient": doc.recipient,
            "template": doc.template,
            "category": doc.category,
            "subject": doc.subject if doc.subject is not None else self._template_subject(doc),
            "own_subject": doc.subject is not None,
            "attempts": doc.attempts,
        }

    def _template_subject(self, doc: EmailDocument) -> str:
        """The subject the template gives it (about 16 us a render: a page of 50 costs 1 ms)."""
        try:
            return render(self.renderer, doc).subject
        except TemplateError:
            return ""

    # -- one email ---------------------------------------------------------------

    async def _doc(self, request: Request) -> EmailDocument | None:
        return await self.store.get(request.path_params["event_id"])

    async def email(self, request: Request) -> Response:
        doc = await self._doc(request)
        if doc is None:
            return self.page(request, "missing.html", status=404,
                             event_id=request.path_params["event_id"])  # fmt: skip
        fields = msgspec.to_builtins(doc)
        fields.pop("history", None)
        fields["attachments"] = [
            f"{a.filename} ({a.content_type}, {len(a.content)} bytes)" for a in doc.attachments
        ]
        try:
            rendered = render(self.renderer, doc)
            source = mime_source(self.config, self.renderer, doc).decode("utf-8", "replace")
            problem = ""
        except (TemplateError, ValueError) as exc:
            rendered, source, problem = None, "", f"{type(exc).__name__}: {exc}"
        timeline: list[dict[str, Any]] = [
            {"at": _when(doc.created_at), "status": "REQUESTED", "attempt": "",
             "provider": "", "code": "", "reply": f"category {doc.category}"}
        ]  # fmt: skip
        for h in doc.history:
            timeline.append({"at": _when(h.at), "status": h.status.value, "attempt": h.attempt,
                             "provider": h.provider or "", "code": h.smtp_code or "",
                             "reply": h.reply or ""})  # fmt: skip
        if doc.status.terminal and not any(h.status == doc.status for h in doc.history):
            timeline.append({"at": _when(doc.updated_at), "status": doc.status.value,
                             "attempt": doc.attempts, "provider": doc.provider or "",
                             "code": "", "reply": doc.error or doc.smtp_reply or ""})  # fmt: skip
        return self.page(
            request, "email.html", doc=doc, fields=sorted(fields.items()), timeline=timeline,
            rendered=rendered, source=source, problem=problem, resent_from=resent_from(doc),
            nonce=new_nonce(),
        )  # fmt: skip

    async def rendered(self, request: Request) -> Response:
        """The message's HTML (or its text) alone, for the sandboxed iframe, under FRAME_CSP."""
        doc = await self._doc(request)
        headers = {"content-security-policy": FRAME_CSP, "x-frame-options": "SAMEORIGIN"}
        if doc is None:
            return PlainTextResponse("no such email", status_code=404, headers=headers)
        try:
            out = render(self.renderer, doc)
        except TemplateError as exc:
            return PlainTextResponse(str(exc), status_code=422, headers=headers)
        if out.html is not None:
            return HTMLResponse(out.html, headers=headers)
        text = self.env.from_string("<pre>{{ t }}</pre>").render(t=out.text)
        return HTMLResponse(text, headers=headers)

    async def raw(self, request: Request) -> Response:
        doc = await self._doc(request)
        if doc is None:
            return PlainTextResponse("no such email", status_code=404)
        try:
            source = mime_source(self.config, self.renderer, doc)
        except (TemplateError, ValueError) as exc:
            return PlainTextResponse(str(exc), status_code=422)
        return Response(source, media_type="text/plain; charset=utf-8",
                        headers={"content-security-policy": "default-src 'none'"})  # fmt: skip

    async def resend(self, request: Request) -> Response:
        doc = await self._doc(request)
        if doc is None:
            return PlainTextResponse("no such email", status_code=404)
        form = await request.form()
        nonce = form.get("nonce")
        if not isinstance(nonce, str) or not nonce or len(nonce) > 64:
            return PlainTextResponse("resend: the form's nonce is missing", status_code=400)
        try:
            new_id = await resend(self.config, self.actor.ctx.lookup, doc, nonce)
        except Exception as exc:  # refused or unreachable: say what, keep serving
            log.warning("resend of %s failed: %s", doc.event_id, exc)
            return PlainTextResponse(f"resend refused: {exc}", status_code=502)
        log.info("resend of %s by the web view: new email %s", doc.event_id, new_id)
        return RedirectResponse(f"{PREFIX}/emails/{new_id}", status_code=303)

    # -- templates ---------------------------------------------------------------

    async def templates(self, request: Request) -> Response:
        previews = []
        for name in self.renderer.names():
            sample = sample_variables(self.renderer, name)
            try:
                out = self.renderer.render(name, sample)
                previews.append({"name": name, "variables": sample, "subject": out.subject,
                                 "text": out.text, "html": out.html is not None,
                                 "error": ""})  # fmt: skip
            except TemplateError as exc:
                previews.append({"name": name, "variables": sample, "subject": "", "text": "",
                                 "html": False, "error": str(exc)})  # fmt: skip
        return self.page(request, "templates.html", previews=previews)

    async def template_html(self, request: Request) -> Response:
        headers = {"content-security-policy": FRAME_CSP, "x-frame-options": "SAMEORIGIN"}
        name = request.path_params["name"]
        if name not in self.renderer:
            return PlainTextResponse("no such template", status_code=404, headers=headers)
        out = self.renderer.render(name, sample_variables(self.renderer, name))
        return HTMLResponse(out.html or "", headers=headers)

    # -- charts --------------------------------------------------------------------

    async def charts_page(self, request: Request) -> Response:
        charts = []
        if self.charts is not None:
            charts = [("Emails per second, by the status stored", self.charts.svg("rates")),
                      ("Request to sent, p50 and p95", self.charts.svg("latency"))]  # fmt: skip
        elsewhere = self.config.bus.kind != "memory"  # latency is observed by the email servers
        return self.page(request, "charts.html", available=self.charts is not None,
                         charts=charts, interval=INTERVAL, elsewhere=elsewhere)  # fmt: skip

    # -- the live tree and its actions ---------------------------------------------

    async def tree(self, request: Request) -> Response:
        return self.page(request, "tree.html", done=_take_flash(request))

    async def tree_json(self, request: Request) -> Response:
        return JSONResponse(await self.trees.gather())

    async def tree_events(self, request: Request) -> Response:
        """The trees as server-sent events, one ``data:`` line of JSON about every second."""
        return StreamingResponse(
            self._tree_stream(), media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},  # a proxy in front passes each event on
        )  # fmt: skip

    async def _tree_stream(self) -> AsyncIterator[bytes]:
        # Ends when the browser goes: Starlette cancels the stream on its disconnect.
        log.debug("tree events: a viewer came")
        try:
            yield f"retry: {int(TREE_EVERY * 1000)}\n\n".encode()
            while True:
                data = msgspec.json.encode(await self.trees.gather())
                yield b"event: tree\ndata: " + data + b"\n\n"
                await trio.sleep(TREE_EVERY)
        finally:
            log.debug("tree events: a viewer left")

    async def act(self, request: Request) -> Response:
        form = await request.form()
        process, action = str(form.get("process", "")), str(form.get("action", ""))
        args: dict[str, Any] = {}
        if action == "restart":
            args["path"] = str(form.get("path", ""))
        try:
            result = await self.trees.act(process, action, **args)
        except Exception as exc:
            return self.page(request, "tree.html", status=400, done=f"{action} failed: {exc}")
        log.warning("web view: %s %s on %s", action, args.get("path", ""), process)
        if action == "dead_letters":
            return self.page(request, "dead_letters.html", process=process, result=result)
        request.session[FLASH] = f"{action} {args.get('path', '')} on {process}: {_summary(result)}"
        return RedirectResponse(f"{PREFIX}/tree", status_code=303)

    async def replay(self, request: Request) -> Response:
        if self.config.bus.kind == "memory":
            done = "the in-process bus's dead letters cannot be replayed"
            return self.page(request, "tree.html", status=400, done=done)
        from actors.bus.rabbitmq import RabbitBus

        bus = RabbitBus(self.config.bus, role="tool", connection_name="mailactors-web")
        await bus.open()
        try:
            depth = (await bus.queue_depths()).get(self.config.bus.dead_letter_queue, 0)
            # Never more than were there: one that dies again at once is not replayed twice.
            replayed = await bus.replay_dead_letters(depth) if depth else 0
        finally:
            await bus.close()
        request.session[FLASH] = f"replayed {replayed} dead letter(s)"
        return RedirectResponse(f"{PREFIX}/tree", status_code=303)

    # -- suppressions ------------------------------------------------------------

    async def suppressions(self, request: Request) -> Response:
        from actors.email_server.safeguards import open_suppression

        async with open_suppression(self.config) as suppression:
            entries = await suppression.entries(500)
        return self.page(request, "suppressions.html", entries=entries,
                         done=_take_flash(request))  # fmt: skip

    async def suppression_change(self, request: Request) -> Response:
        from actors.email_server.safeguards import open_suppression

        form = await request.form()
        address, action = str(form.get("address", "")).strip(), str(form.get("action", ""))
        if "@" not in address or action not in {"add", "remove"}:
            return PlainTextResponse("give an email address and add or remove", status_code=400)
        async with open_suppression(self.config) as suppression:
            if action == "add":
                reason = str(form.get("reason", "")).strip() or "added in the web view"
                changed = await suppression.add(address, reason, source="operator")
            else:
                changed = await suppression.remove(address)
        request.session[FLASH] = f"{action} {address}: {'done' if changed else 'nothing to do'}"
        return RedirectResponse(f"{PREFIX}/suppressions", status_code=303)

    # -- the app -----------------------------------------------------------------

    def app(self) -> Starlette:
        g = self.guarded
        routes = [
            Route("/", _to_the_log, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", g(self.logout), methods=["POST"]),
            Route("/emails", g(self.emails), methods=["GET"]),
            Route("/emails/{event_id}", g(self.email), methods=["GET"]),
            Route("/emails/{event_id}/rendered", g(self.rendered), methods=["GET"]),
            Route("/emails/{event_id}/raw", g(self.raw), methods=["GET"]),
            Route("/emails/{event_id}/resend", g(self.resend), methods=["POST"]),
            Route("/templates", g(self.templates), methods=["GET"]),
            Route("/templates/{name}/html", g(self.template_html), methods=["GET"]),
            Route("/charts", g(self.charts_page), methods=["GET"]),
            Route("/tree", g(self.tree), methods=["GET"], name="tree"),
            Route("/tree.json", g(self.tree_json), methods=["GET"]),
            Route("/tree/events", g(self.tree_events), methods=["GET"]),
            Route("/tree/act", g(self.act), methods=["POST"]),
            Route("/dead-letters/replay", g(self.replay), methods=["POST"]),
            Route("/suppressions", g(self.suppressions), methods=["GET"], name="suppressions"),
            Route("/suppressions", g(self.suppression_change), methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        middleware = [
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=secrets.token_urlsafe(32),  # per process: restart = log in again
                session_cookie="mailactors_web",
                max_age=SESSION_HOURS * 3600,
                path=PREFIX,
                same_site="strict",
                https_only=self.config.http.tls,
            ),
        ]
        return Starlette(routes=routes, middleware=middleware)


async def _to_the_log(request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/emails", status_code=303)


FLASH = "flash"  # what the last action did, shown once on the next page (not in the URL)


def _take_flash(request: Request) -> str:
    return str(request.session.pop(FLASH, ""))


def _summary(result: Any) -> str:
    if isinstance(result, dict):
        return ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, dict))
    return str(result)


def web_routes(config: Config, store: Store) -> Any:
    """The route factory of the web view, for ``http_routes``."""

    def routes(actor: Actor[Any]) -> Sequence[BaseRoute]:
        view = WebView(config, store, actor)

        return [Route("/", _to_the_log, methods=["GET"]), Mount(PREFIX, app=view.app(), name="web")]

    return routes
