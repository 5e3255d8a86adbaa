"""Email templates: a sandboxed Jinja2 environment over a directory of named templates.

Layout: ``<dir>/<name>/subject.txt``, ``<dir>/<name>/body.txt`` and, optionally,
``<dir>/<name>/body.html``. Only names found in the directory are accepted, and a
name must match ``^[a-z0-9][a-z0-9_-]{0,63}$``, so a request can never reach a file
outside it. Callers' variables are data: they are substituted, never evaluated,
and only the HTML part is autoescaped. Templates are trusted, but still rendered
in Jinja's immutable sandbox, so a careless template cannot reach Python internals
or mutate the caller's variables. Every template is compiled once, when the
renderer is built, so a syntax error stops start-up rather than a send.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import msgspec
from jinja2 import meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "HEADER_BREAKERS",
    "NAME_PATTERN",
    "RenderError",
    "RenderedEmail",
    "TemplateError",
    "TemplateNotFound",
    "TemplateRenderer",
    "check_template_name",
    "has_line_break",
]

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

SUBJECT_FILE = "subject.txt"
TEXT_FILE = "body.txt"
HTML_FILE = "body.html"

# What may not stand in a header value (a subject is one): CR, LF and NUL, and every other
# character Python's email package (str.splitlines) takes for a line boundary (VT, FF, FS,
# GS, RS, NEL, U+2028, U+2029), so all C0/C1 controls but TAB, and DEL. validation uses
# it for the request's header fields.
HEADER_BREAKERS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")
_MISSING_ATTR = re.compile(r"has no attribute '([^']+)'")


class _NonePrinted(Exception):
    """A ``{{ ... }}`` evaluated to None (JSON null, or an unset gRPC Value)."""


def _refuse_none(value: Any) -> Any:
    # Printed, None reads "None" in the email. A template can still test it
    # ({% if name %}) or give a default ({{ name or "there" }}); only printing fails.
    if value is None:
        raise _NonePrinted
    return value


def has_line_break(value: Any, depth: int = 0) -> bool:
    """True if a string anywhere inside ``value`` holds CR, LF or NUL."""
    if isinstance(value, str):
        return HEADER_BREAKERS.search(value) is not None
    if depth > 32:
        return False
    if isinstance(value, Mapping):
        return any(has_line_break(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_line_break(v, depth + 1) for v in value)
    return False


class RenderedEmail(msgspec.Struct, frozen=True, kw_only=True):
    """The three parts of a rendered email; ``html`` is None when there is no HTML body."""

    subject: str
    text: str
    html: str | None = None


class TemplateError(Exception):
    """Base of the errors of this module."""


class TemplateNotFound(TemplateError, LookupError):
    """The name is malformed or names no template in the directory."""

    def __init__(self, name: str, reason: str = "") -> None:
        self.name = name
        self.reason = reason or "no such template"
        super().__init__(name, self.reason)

    def __str__(self) -> str:
        return f"template {self.name!r}: {self.reason}"


class RenderError(TemplateError):
    """A template could not be rendered with the given variables.

    ``template`` is the template's name, ``variable`` the variable at fault when
    one is known (``"subject"`` for the subject override), ``cause`` the
    underlying Jinja exception, if any (a ``SecurityError`` for a sandbox
    violation).
    """

    def __init__(
        self,
        template: str,
        message: str,
        *,
        variable: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        self.template = template
        self.message = message
        self.variable = variable
        self.cause = cause
        super().__init__(template, message)

    @property
    def security(self) -> bool:
        """True when the sandbox stopped the template (a template bug, not bad input)."""
        return isinstance(self.cause, SecurityError)

    def __str__(self) -> str:
        return f"template {self.template!r}: {self.message}"


def check_template_name(name: object) -> str:
    """Return ``name`` if it is a well-formed template name, else raise TemplateNotFound."""
    if not isinstance(name, str):
        raise TemplateNotFound(repr(name), "a template name must be a string")
    if not NAME_PATTERN.fullmatch(name):
        raise TemplateNotFound(
            name, "not a valid template name (lowercase letters, digits, '-' and '_' only)"
        )
    return name


class _Part(msgspec.Struct, frozen=True):
    """A compiled template and a plain-dict copy of its globals (see ``_render``)."""

    template: jinja2.Template
    globals: dict[str, Any]


class _Compiled(msgspec.Struct, frozen=True):
    subject: _Part
    text: _Part
    html: _Part | None
    subject_variables: frozenset[str]
    variables: frozenset[str]


class TemplateRenderer:
    """Renders the templates of one directory. Safe to share: it holds no per-call state."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).resolve()
        if not self.directory.is_dir():
            raise TemplateError(f"template directory {str(self.directory)!r} does not exist")
        self._env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(self.directory),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html", "htm", "xml"),
                default_for_string=False,
                default=False,
            ),
            auto_reload=False,
            cache_size=-1,
            keep_trailing_newline=True,  # bodies keep their final newline; subjects are stripped
            finalize=_refuse_none,
        )
        self._compiled: dict[str, _Compiled] = {}
        for entry in sorted(self.directory.iterdir()):
            if (
                entry.is_dir()
                and NAME_PATTERN.fullmatch(entry.name)
                and (entry / SUBJECT_FILE).is_file()
                and (entry / TEXT_FILE).is_file()
            ):
                self._compiled[entry.name] = self._compile(entry.name)

    def _compile(self, name: str) -> _Compiled:
        def load(part: str) -> tuple[_Part, frozenset[str]]:
            path = f"{name}/{part}"
            try:
                source = self._env.loader.get_source(self._env, path)[0]  # type: ignore[union-attr]
                variables = frozenset(meta.find_undeclared_variables(self._env.parse(source)))
                template = self._env.get_template(path)
                return _Part(template, dict(template.globals)), variables
            except jinja2.TemplateSyntaxError as exc:
                raise RenderError(
                    name, f"syntax error in {part} line {exc.lineno}: {exc.message}", cause=exc
                ) from None

        subject, subject_vars = load(SUBJECT_FILE)
        text, text_vars = load(TEXT_FILE)
        html, html_vars = (None, frozenset[str]())
        if (self.directory / name / HTML_FILE).is_file():
            html, html_vars = load(HTML_FILE)
        return _Compiled(
            subject=subject,
            text=text,
            html=html,
            subject_variables=subject_vars,
            variables=subject_vars | text_vars | html_vars,
        )

    def names(self) -> list[str]:
        """The names of the templates in the directory, sorted."""
        return list(self._compiled)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._compiled

    def _get(self, name: object) -> _Compiled:
        checked = check_template_name(name)
        try:
            return self._compiled[checked]
        except KeyError:
            raise TemplateNotFound(checked) from None

    def variables(self, name: str) -> frozenset[str]:
        """Every variable the template's parts refer to (some may be optional)."""
        return self._get(name).variables

    def subject_variables(self, name: str) -> frozenset[str]:
        """The variables that end up in the Subject header, where line breaks are forbidden."""
        return self._get(name).subject_variables

    def render(
        self,
        template: str,
        variables: Mapping[str, Any],
        subject_override: str | None = None,
    ) -> RenderedEmail:
        """Render all parts. ``subject_override`` is used verbatim, never as a template.

        Raises TemplateNotFound for an unknown name and RenderError for anything
        that goes wrong while rendering (missing variable, sandbox violation, a
        line break in the subject).
        """
        compiled = self._get(template)
        context = dict(variables)
        if subject_override is None:
            for name in sorted(compiled.subject_variables):
                if name in context and has_line_break(context[name]):
                    raise RenderError(
                        template,
                        f"variable {name!r} is used in the subject and contains a line break",
                        variable=name,
                    )
            subject = self._render(template, SUBJECT_FILE, compiled.subject, context).strip()
            if HEADER_BREAKERS.search(subject):
                raise RenderError(template, "the subject renders with a line break")
        else:
            if HEADER_BREAKERS.search(subject_override):
                raise RenderError(template, "the subject contains a line break", variable="subject")
            subject = subject_override
        text = self._render(template, TEXT_FILE, compiled.text, context)
        html = None
        if compiled.html is not None:
            html = self._render(template, HTML_FILE, compiled.html, context)
        return RenderedEmail(subject=subject, text=text, html=html)

    @staticmethod
    def _render(name: str, part: str, compiled: _Part, context: dict[str, Any]) -> str:
        tpl = compiled.template
        env = tpl.environment
        try:
            # What tpl.render(context) does (the environment is not async), but
            # with the globals kept as a plain dict: Template.new_context copied
            # and iterated the template's globals ChainMap on every call, 60% of
            # the cost of a render. The sandbox is in env and the compiled code.
            ctx = env.context_class(
                env, dict(compiled.globals, **context), tpl.name, tpl.blocks, compiled.globals
            )
            try:
                return env.concat(tpl.root_render_func(ctx))
            except Exception:
                env.handle_exception()  # as render(): tracebacks point into the template
        except jinja2.UndefinedError as exc:
            # StrictUndefined says "'code' is undefined" or "'dict object' has no attribute 'x'".
            text = str(exc.message or exc)
            match = _UNDEFINED_NAME.match(text) or _MISSING_ATTR.search(text)
            variable = match.group(1) if match else None
            if variable is not None and match is not None and match.re is _UNDEFINED_NAME:
                message = f"missing variable {variable!r} (used in {part})"
            else:
                message = f"bad variable in {part}: {text}"
            raise RenderError(name, message, variable=variable, cause=exc) from None
        except SecurityError as exc:
            raise RenderError(
                name, f"unsafe operation in {part} stopped by the sandbox: {exc}", cause=exc
            ) from None
        except _NonePrinted as exc:
            nulls = sorted(k for k, v in context.items() if v is None)
            if len(nulls) == 1:
                message = f"variable {nulls[0]!r} is null and is printed in {part}"
            else:
                names = ", ".join(nulls) or "none at the top level"
                message = f"a null value is printed in {part} (null variables: {names})"
            raise RenderError(
                name, message, variable=nulls[0] if len(nulls) == 1 else None, cause=exc
            ) from None
        except Exception as exc:  # any other failure of a template is a RenderError too
            raise RenderError(
                name, f"cannot render {part}: {type(exc).__name__}: {exc}", cause=exc
            ) from None
