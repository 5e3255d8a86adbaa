"""``TemplateRenderer`` renders with a precomputed globals dict; it must match ``Template.render``.

Each case renders through the renderer and through jinja2's own ``Template.render``
on the same compiled template, and compares the text or, for a failure, the
exception the renderer wraps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.exceptions import SecurityError

from actors.domain.templates import RenderError, TemplateRenderer
from config import PROJECT_ROOT

SHIPPED_CASES = [
    ("verification", {"code": "482913", "name": "Ada", "expires_minutes": 15}),
    ("verification", {"code": 7, "name": "<b>Zoë</b> & co", "expires_minutes": 1.5, "x": None}),
    ("password-reset", {"reset_url": "https://example.com/r?t=a&u=1", "name": "A\nB"}),
    ("welcome", {"name": "Ada", "product": "Mailactors", "range": "shadowed global"}),
]


def make_renderer(tmp_path: Path, text: str, subject: str = "s") -> TemplateRenderer:
    d = tmp_path / "t"
    d.mkdir(parents=True)
    (d / "subject.txt").write_text(subject)
    (d / "body.txt").write_text(text)
    return TemplateRenderer(tmp_path)


def jinja_render(renderer: TemplateRenderer, name: str, part: str, context: dict[str, Any]) -> str:
    compiled = renderer._compiled[name]
    template = getattr(compiled, part).template
    assert isinstance(template, jinja2.Template)
    return template.render(dict(context))


@pytest.mark.parametrize(("name", "variables"), SHIPPED_CASES)
def test_shipped_templates_render_as_jinja_does(name: str, variables: dict[str, Any]) -> None:
    renderer = TemplateRenderer(PROJECT_ROOT / "templates")
    out = renderer.render(name, variables)
    assert out.subject == jinja_render(renderer, name, "subject", variables).strip()
    assert out.text == jinja_render(renderer, name, "text", variables)
    assert out.html == jinja_render(renderer, name, "html", variables)


def test_globals_are_there_and_variables_override_them(tmp_path: Path) -> None:
    text = (
        "{{ dict(a=1) }} {% set ns = namespace(n=1) %}{{ ns.n }}"
        " {% set c = cycler('x', 'y') %}{{ c.next() }}{{ c.next() }}"
        " {% set j = joiner('|') %}{{ j() }}a{{ j() }}b {{ lipsum(1, False, 3, 5) | length > 0 }}"
        " {{ range }}"
    )
    renderer = make_renderer(tmp_path, text)
    variables = {"range": "mine"}
    out = renderer.render("t", variables).text
    assert out == jinja_render(renderer, "t", "text", variables)
    assert out == "{'a': 1} 1 xy a|b True mine"
    assert (
        make_renderer(tmp_path / "r", "{{ range(3) | list }}").render("t", {}).text == "[0, 1, 2]"
    )


ERROR_CASES = [
    ("{{ missing }}", {}, jinja2.UndefinedError),
    ("{{ user.name }}", {"user": {}}, jinja2.UndefinedError),
    ("{{ ''.__class__.__mro__ }}", {}, SecurityError),
    ("{{ v.__class__ }}", {"v": 1}, SecurityError),
    ("{% do items.append(1) %}", {"items": []}, jinja2.TemplateSyntaxError),
    ("{{ items.append(1) }}", {"items": []}, SecurityError),
    ("{{ range(10 ** 9) | list }}", {}, OverflowError),  # the sandbox's range
    ("{{ n + 1 }}", {"n": "text"}, TypeError),
    ("{{ 1 / 0 }}", {}, ZeroDivisionError),
    ("{{ x }}", {1: "not a str key", "x": 1}, TypeError),
]


@pytest.mark.parametrize(("text", "variables", "kind"), ERROR_CASES)
def test_failures_are_the_ones_jinja_raises(
    tmp_path: Path, text: str, variables: dict[Any, Any], kind: type[Exception]
) -> None:
    try:
        renderer = make_renderer(tmp_path, text)
    except RenderError as exc:  # a syntax error is refused when compiling, as before
        assert kind is jinja2.TemplateSyntaxError and isinstance(exc.cause, kind)
        return
    with pytest.raises(RenderError) as err:
        renderer.render("t", variables)
    with pytest.raises(kind) as direct:
        jinja_render(renderer, "t", "text", variables)
    cause = err.value.cause
    assert type(cause) is type(direct.value)
    assert str(cause) == str(direct.value)
    assert err.value.security == isinstance(direct.value, SecurityError)
    assert "body.txt" in str(err.value) or "subject.txt" in str(err.value)  # the first to fail


def test_render_error_messages_are_unchanged(tmp_path: Path) -> None:
    renderer = make_renderer(tmp_path, "{{ code }} {{ user.name }} {{ n + 1 }}")
    with pytest.raises(RenderError) as err:
        renderer.render("t", {})
    assert str(err.value) == "template 't': missing variable 'code' (used in body.txt)"
    assert err.value.variable == "code"
    with pytest.raises(RenderError) as err:
        renderer.render("t", {"code": 1, "user": {}})
    assert str(err.value) == (
        "template 't': bad variable in body.txt: 'dict object' has no attribute 'name'"
    )
    assert err.value.variable == "name"
    with pytest.raises(RenderError) as err:
        renderer.render("t", {"code": 1, "user": {"name": "n"}, "n": "s"})
    assert str(err.value) == (
        "template 't': cannot render body.txt: TypeError: can only concatenate str (not \"int\")"
        " to str"
    )


def test_a_render_does_not_leak_into_the_next(tmp_path: Path) -> None:
    renderer = make_renderer(tmp_path, "{% set x = 1 %}{{ y | default('none') }} {{ x }}")
    assert renderer.render("t", {"y": "a"}).text == "a 1"
    assert renderer.render("t", {}).text == "none 1"
    compiled = renderer._compiled["t"].text
    assert "y" not in compiled.globals and "x" not in compiled.globals
