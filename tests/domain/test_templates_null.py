"""None never reaches a rendered email: printing a null variable is a render error.

gRPC clients send variables as a ``google.protobuf.Struct``, whose values may be
``null_value`` (or unset); they arrive here as None.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.domain.templates import RenderError, TemplateRenderer
from actors.domain.validation import InvalidField, validate_request
from actors.grpc.convert import struct_to_variables, variables_to_struct
from config import PROJECT_ROOT, LimitsConfig

RENDERER = TemplateRenderer(PROJECT_ROOT / "templates")


def test_a_null_printed_is_a_render_error_naming_the_variable() -> None:
    with pytest.raises(RenderError, match="variable 'name' is null") as info:
        RENDERER.render("welcome", {"name": None, "product": "Acme"})
    assert info.value.variable == "name"


def test_a_null_from_grpc_is_refused_naming_the_field() -> None:
    variables = struct_to_variables(variables_to_struct({"name": None, "product": "Acme"}))
    assert variables["name"] is None
    with pytest.raises(InvalidField) as info:
        validate_request(
            "ada@example.com", "welcome", variables, "transactional", None, [], LimitsConfig(),
            RENDERER,
        )
    assert info.value.field == "variables"
    assert "'name' is null" in str(info.value)


def test_a_null_may_be_tested_or_given_a_default(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "subject.txt").write_text("Hi {{ name or 'there' }}")
    (tmp_path / "t" / "body.txt").write_text(
        "{% if name is none %}no name{% else %}{{ name }}{% endif %} {{ user.nick or '-' }}\n"
    )
    renderer = TemplateRenderer(tmp_path)
    got = renderer.render("t", {"name": None, "user": {"nick": None}})
    assert (got.subject, got.text) == ("Hi there", "no name -\n")
    # A null inside an object, printed, is refused too.
    (tmp_path / "t" / "body.txt").write_text("{{ user.nick }}\n")
    with pytest.raises(RenderError, match="null value is printed in body.txt"):
        TemplateRenderer(tmp_path).render("t", {"name": "x", "user": {"nick": None}})
