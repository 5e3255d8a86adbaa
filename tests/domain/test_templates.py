"""Template rendering: shipped templates, strictness, sandbox, escaping, header safety."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.domain.templates import (
    RenderedEmail,
    RenderError,
    TemplateError,
    TemplateNotFound,
    TemplateRenderer,
)
from config import PROJECT_ROOT

SHIPPED: dict[str, dict[str, Any]] = {
    "verification": {"code": "482913", "name": "Ada", "expires_minutes": 15},
    "password-reset": {"reset_url": "https://example.com/reset?t=abc&u=1", "name": "Ada"},
    "welcome": {"name": "Ada", "product": "Mailactors"},
}


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(PROJECT_ROOT / "templates")


def make_dir(tmp_path: Path, name: str, subject: str, text: str, html: str | None = None) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "subject.txt").write_text(subject)
    (d / "body.txt").write_text(text)
    if html is not None:
        (d / "body.html").write_text(html)
    return tmp_path


def test_names_lists_the_shipped_templates(renderer: TemplateRenderer) -> None:
    assert renderer.names() == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_template_renders_with_its_variables(
    renderer: TemplateRenderer, name: str
) -> None:
    variables = SHIPPED[name]
    out = renderer.render(name, variables, None)
    assert isinstance(out, RenderedEmail)
    assert out.subject and "\n" not in out.subject
    assert out.html is not None
    for value in variables.values():
        if name == "password-reset" and value == variables["reset_url"]:
            assert str(value) in out.text  # the text part is not escaped
            assert "t=abc&amp;u=1" in out.html  # the HTML part is
        else:
            assert str(value) in out.text
            assert str(value) in out.html
    assert renderer.variables(name) == frozenset(variables)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_template_needs_every_variable(renderer: TemplateRenderer, name: str) -> None:
    for missing in SHIPPED[name]:
        variables = {k: v for k, v in SHIPPED[name].items() if k != missing}
        with pytest.raises(RenderError) as err:
            renderer.render(name, variables, None)
        assert err.value.variable == missing
        assert repr(name) in str(err.value) and repr(missing) in str(err.value)


def test_missing_variable_message(renderer: TemplateRenderer) -> None:
    with pytest.raises(RenderError, match=r"template 'welcome': missing variable 'product'"):
        renderer.render("welcome", {"name": "x"}, None)


def test_subject_override_is_used_verbatim(renderer: TemplateRenderer) -> None:
    out = renderer.render("welcome", SHIPPED["welcome"], "Hello {{ name }}")
    assert out.subject == "Hello {{ name }}"  # never evaluated as a template


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "/etc/passwd", "..\\x", "..", "welcome/../welcome", "a/b", ""]
)
def test_path_traversal_names_are_refused(renderer: TemplateRenderer, name: str) -> None:
    with pytest.raises(TemplateNotFound):
        renderer.render(name, {}, None)


@pytest.mark.parametrize("name", ["Welcome", "welcome\n", " welcome", "x" * 65, "-x", "nope"])
def test_other_bad_or_unknown_names(renderer: TemplateRenderer, name: str) -> None:
    with pytest.raises(TemplateNotFound):
        renderer.render(name, {}, None)
    assert name not in renderer


def test_traversal_cannot_reach_a_real_file_beside_the_directory(tmp_path: Path) -> None:
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    make_dir(tpl, "ok", "s", "t")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "subject.txt").write_text("SECRET")
    (secret / "body.txt").write_text("SECRET")
    r = TemplateRenderer(tpl)
    assert r.names() == ["ok"]
    for name in ("../secret", str(secret), "secret"):
        with pytest.raises(TemplateNotFound):
            r.render(name, {}, None)


def test_only_complete_directories_are_templates(tmp_path: Path) -> None:
    make_dir(tmp_path, "good", "s", "t")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "subject.txt").write_text("s")
    (tmp_path / "Bad_Name").mkdir()
    (tmp_path / "loose.txt").write_text("x")
    assert TemplateRenderer(tmp_path).names() == ["good"]


def test_sandbox_escape_in_a_template_is_a_render_error(tmp_path: Path) -> None:
    make_dir(tmp_path, "evil", "hi", "{{ ''.__class__.__mro__ }}")
    r = TemplateRenderer(tmp_path)
    with pytest.raises(RenderError) as err:
        r.render("evil", {}, None)
    assert err.value.security
    assert "sandbox" in str(err.value) and "'evil'" in str(err.value)


def test_sandbox_escape_through_a_variable(tmp_path: Path) -> None:
    make_dir(tmp_path, "evil", "hi", "{{ x.__class__.__subclasses__() }}")
    with pytest.raises(RenderError) as err:
        TemplateRenderer(tmp_path).render("evil", {"x": 1}, None)
    assert err.value.security


def test_variables_cannot_be_mutated_by_a_template(tmp_path: Path) -> None:
    make_dir(tmp_path, "mut", "hi", "{{ items.append(4) }}")
    items = [1, 2, 3]
    with pytest.raises(RenderError):
        TemplateRenderer(tmp_path).render("mut", {"items": items}, None)
    assert items == [1, 2, 3]


def test_template_syntax_in_a_variable_is_rendered_as_text(renderer: TemplateRenderer) -> None:
    out = renderer.render("welcome", {"name": "{{ 7*7 }}", "product": "{% raw %}x"}, None)
    assert "{{ 7*7 }}" in out.subject and "49" not in out.subject
    assert "{{ 7*7 }}" in out.text and "49" not in out.text
    assert out.html is not None and "{{ 7*7 }}" in out.html
    assert "{% raw %}x" in out.text


def test_html_is_autoescaped_and_text_is_not(renderer: TemplateRenderer) -> None:
    out = renderer.render("welcome", {"name": "<script>alert(1)</script>", "product": "A&B"}, None)
    assert "<script>alert(1)</script>" in out.text
    assert "A&B" in out.text
    assert out.html is not None
    assert "<script>" not in out.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out.html
    assert "A&amp;B" in out.html
    assert "&lt;" not in out.subject  # the subject is text too


def test_template_without_html_part(tmp_path: Path) -> None:
    make_dir(tmp_path, "plain", "Hi {{ n }}", "Body {{ n }}\n")
    out = TemplateRenderer(tmp_path).render("plain", {"n": "<b>"}, None)
    assert out == RenderedEmail(subject="Hi <b>", text="Body <b>\n", html=None)


@pytest.mark.parametrize("bad", ["x\r\nBcc: evil@example.com", "x\nX-Injected: 1", "x\r", "x\x00"])
def test_line_break_in_a_subject_variable(renderer: TemplateRenderer, bad: str) -> None:
    with pytest.raises(RenderError) as err:
        renderer.render("welcome", {"name": bad, "product": "P"}, None)
    assert err.value.variable == "name"
    assert "subject" in str(err.value)


def test_trailing_newline_in_a_subject_variable_is_still_refused(
    renderer: TemplateRenderer,
) -> None:
    with pytest.raises(RenderError):
        renderer.render("welcome", {"name": "Ada", "product": "P\n"}, None)


def test_line_break_in_a_body_only_variable_is_fine(renderer: TemplateRenderer) -> None:
    out = renderer.render("password-reset", {"name": "A\nB", "reset_url": "u"}, None)
    assert "A\nB" in out.text


def test_line_break_in_a_nested_subject_variable(tmp_path: Path) -> None:
    make_dir(tmp_path, "n", "Hi {{ user.name }}", "b")
    with pytest.raises(RenderError) as err:
        TemplateRenderer(tmp_path).render("n", {"user": {"name": "a\r\nb"}}, None)
    assert err.value.variable == "user"


def test_line_break_in_the_subject_override(renderer: TemplateRenderer) -> None:
    with pytest.raises(RenderError) as err:
        renderer.render("welcome", SHIPPED["welcome"], "Hi\r\nBcc: x@example.com")
    assert err.value.variable == "subject"


def test_template_whose_subject_has_a_line_break(tmp_path: Path) -> None:
    make_dir(tmp_path, "two", "line one\nline two\n", "b")
    with pytest.raises(RenderError, match="subject renders with a line break"):
        TemplateRenderer(tmp_path).render("two", {}, None)


def test_subject_surrounding_whitespace_is_stripped(tmp_path: Path) -> None:
    make_dir(tmp_path, "ws", "  Hello {{ n }}  \n", "b")
    assert TemplateRenderer(tmp_path).render("ws", {"n": 1}, None).subject == "Hello 1"


def test_syntax_error_stops_construction(tmp_path: Path) -> None:
    make_dir(tmp_path, "broken", "{{ unclosed", "b")
    with pytest.raises(RenderError, match=r"'broken'.*syntax error in subject.txt"):
        TemplateRenderer(tmp_path)


def test_templates_are_compiled_once(tmp_path: Path) -> None:
    make_dir(tmp_path, "c", "v1", "body")
    r = TemplateRenderer(tmp_path)
    (tmp_path / "c" / "subject.txt").write_text("v2")
    assert r.render("c", {}, None).subject == "v1"


def test_runtime_error_in_a_template_is_a_render_error(tmp_path: Path) -> None:
    make_dir(tmp_path, "math", "s", "{{ n + 1 }}")
    with pytest.raises(RenderError, match="'math'"):
        TemplateRenderer(tmp_path).render("math", {"n": "text"}, None)


def test_missing_directory() -> None:
    with pytest.raises(TemplateError, match="does not exist"):
        TemplateRenderer("/nonexistent/templates")
