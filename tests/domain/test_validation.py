"""Request validation: each rule refuses what it must, names the field, and nothing else escapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.domain.schema import Attachment, EmailSendEvent
from actors.domain.templates import TemplateRenderer
from actors.domain.validation import (
    InvalidField,
    normalize_recipient,
    validate_event,
    validate_request,
)
from config import LimitsConfig
from tests.support.validation import LIMITS, RENDERER, WELCOME

PDF = Attachment(filename="invoice.pdf", content_type="application/pdf", content=b"%PDF-1.4")


def check(
    recipient: Any = "ada@example.com",
    template: Any = "welcome",
    variables: Any = None,
    category: Any = "transactional",
    subject: Any = None,
    attachments: Any = None,
    limits: LimitsConfig = LIMITS,
    renderer: TemplateRenderer = RENDERER,
) -> str:
    return validate_request(
        recipient,
        template,
        dict(WELCOME) if variables is None else variables,
        category,
        subject,
        attachments if attachments is not None else [],
        limits,
        renderer,
    )


def refused(field: str, **kwargs: Any) -> InvalidField:
    with pytest.raises(InvalidField) as err:
        check(**kwargs)
    assert err.value.field == field, str(err.value)
    assert str(err.value).startswith(f"{field}: ")
    return err.value


def test_a_good_request_returns_the_normalized_recipient() -> None:
    assert check(recipient="Ada@Example.COM") == "Ada@example.com"
    assert check(attachments=[PDF], subject="Your invoice") == "ada@example.com"


def test_invalid_field_str() -> None:
    assert str(InvalidField("recipient", "is bad")) == "recipient: is bad"


# --- recipient -------------------------------------------------------------------------


def test_idn_domain_is_accepted() -> None:
    assert check(recipient="user@bücher.example") == "user@bücher.example"
    assert check(recipient="user@xn--bcher-kva.example") == "user@bücher.example"


@pytest.mark.parametrize(
    "address",
    [
        "a@b",
        "example..com",
        "user@example..com",
        "@example.com",
        "user@",
        "user",
        "",
        "user@@example.com",
        "us er@example.com",
        "Ada <ada@example.com>",
        "user@localhost",
        "user@-bad.com",
        "user@exa_mple.com",
        "ada@example.com\r\nBcc: evil@example.com",
        "ada@example.com\n",
        "a" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
        "a@" + ".".join(["b" * 60] * 5) + ".com",
    ],
)
def test_invalid_addresses(address: str) -> None:
    refused("recipient", recipient=address)


@pytest.mark.parametrize("value", [None, 3, b"ada@example.com", ["ada@example.com"]])
def test_recipient_of_the_wrong_type(value: Any) -> None:
    refused("recipient", recipient=value)


def test_recipient_length_limit_counts_octets() -> None:
    local = "é" * 33  # 33 characters, 66 octets
    with pytest.raises(InvalidField, match="recipient"):
        normalize_recipient(f"{local}@example.com")
    assert normalize_recipient("é" * 32 + "@example.com")


# --- template and category --------------------------------------------------------------


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "..\\x", "nope", "Welcome", 7])
def test_unknown_or_malformed_template(name: Any) -> None:
    refused("template", template=name)


@pytest.mark.parametrize(
    "category", ["", "Transactional", "a b", "a\r\nb", "x" * 65, "-x", "tx\n", 5, None]
)
def test_bad_category(category: Any) -> None:
    refused("category", category=category)


@pytest.mark.parametrize("category", ["transactional", "marketing.news", "a", "x_1-2.3"])
def test_good_category(category: str) -> None:
    check(category=category)


# --- subject ----------------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: evil@example.com", "Hi\nthere", "Hi\r", "a\x00"])
def test_crlf_injection_in_the_subject(subject: str) -> None:
    refused("subject", subject=subject)


def test_crlf_injection_in_a_subject_variable() -> None:
    err = refused("variables", variables={"name": "Ada\r\nBcc: evil@example.com", "product": "P"})
    assert "'name'" in str(err)


def test_line_break_in_a_body_only_variable_is_accepted() -> None:
    check(template="password-reset", variables={"name": "A\nB", "reset_url": "https://x.example/r"})


def test_subject_variable_line_break_is_fine_when_the_subject_is_overridden() -> None:
    check(variables={"name": "Ada\nLovelace", "product": "P"}, subject="Welcome")


def test_subject_length() -> None:
    check(subject="x" * LIMITS.max_subject_chars)
    err = refused("subject", subject="x" * (LIMITS.max_subject_chars + 1))
    assert str(LIMITS.max_subject_chars) in str(err)


@pytest.mark.parametrize("subject", ["", "   ", 5, b"bytes"])
def test_blank_or_wrong_type_subject(subject: Any) -> None:
    refused("subject", subject=subject)


# --- variables --------------------------------------------------------------------------


def test_missing_variable_found_by_the_pre_render() -> None:
    err = refused("variables", variables={"name": "Ada"})
    assert "'product'" in str(err)


def test_oversized_variables() -> None:
    limits = LimitsConfig(max_variables_bytes=100)
    err = refused("variables", variables={**WELCOME, "blob": "x" * 100}, limits=limits)
    assert "100" in str(err)
    check(variables=WELCOME, limits=limits)


@pytest.mark.parametrize(
    "extra",
    [
        {"s": {1, 2}},
        {"b": b"bytes"},
        {"o": object()},
        {"nan": float("nan")},
        {"inf": float("inf")},
        {"big": 2**64},
        {"nested": {"k": [1, {"deep": Path("/")}]}},
        {"surrogate": "\ud800"},
    ],
)
def test_only_json_values_are_accepted(extra: dict[str, Any]) -> None:
    refused("variables", variables={**WELCOME, **extra})


def test_non_string_keys_and_non_mapping() -> None:
    refused("variables", variables={**WELCOME, 1: "x"})
    refused("variables", variables=["name", "product"])


def test_too_deep_nesting() -> None:
    deep: Any = "leaf"
    for _ in range(100):
        deep = [deep]
    refused("variables", variables={**WELCOME, "deep": deep})
    loop: dict[str, Any] = {}
    loop["self"] = loop
    refused("variables", variables={**WELCOME, "loop": loop})


def test_json_variables_of_every_type_are_accepted() -> None:
    check(variables={**WELCOME, "n": None, "t": True, "i": -3, "f": 1.5, "l": [1, "a", {"k": []}]})


def test_template_syntax_in_a_variable_is_accepted_and_not_evaluated() -> None:
    check(variables={"name": "{{ 7*7 }}", "product": "{% for x in y %}"})


# --- attachments ------------------------------------------------------------------------


def att(**kw: Any) -> Attachment:
    base = {"filename": "a.pdf", "content_type": "application/pdf", "content": b"%PDF"}
    return Attachment(**{**base, **kw})


@pytest.mark.parametrize("ctype", ["application/x-msdownload", "text/html", "application/zip", ""])
def test_bad_attachment_type(ctype: str) -> None:
    err = refused("attachments[0].content_type", attachments=[att(content_type=ctype)])
    assert "not allowed" in str(err)


def test_attachment_type_parameters_and_case() -> None:
    check(attachments=[att(filename="a.txt", content_type="Text/Plain; charset=utf-8")])
    refused(
        "attachments[0].content_type",
        attachments=[att(content_type="text/plain;\r\n charset=x")],
    )


@pytest.mark.parametrize(
    "filename",
    ["../a.pdf", "/etc/passwd", "dir\\a.pdf", "a\r\n.pdf", "a\x00.pdf", "", "..", "x" * 256],
)
def test_bad_attachment_filename(filename: str) -> None:
    refused("attachments[0].filename", attachments=[att(filename=filename)])


def test_attachment_filename_may_be_unicode() -> None:
    check(attachments=[att(filename="facture été.pdf")])


def test_too_many_attachments() -> None:
    limits = LimitsConfig(max_attachments=2)
    check(attachments=[att(), att()], limits=limits)
    refused("attachments", attachments=[att(), att(), att()], limits=limits)


def test_attachment_too_big() -> None:
    limits = LimitsConfig(max_attachment_bytes=10, max_message_bytes=10_000)
    check(attachments=[att(content=b"x" * 10)], limits=limits)
    refused("attachments[1].content", attachments=[att(), att(content=b"x" * 11)], limits=limits)


def test_whole_message_too_big() -> None:
    limits = LimitsConfig(max_attachment_bytes=4000, max_message_bytes=8000)
    check(attachments=[att(content=b"x" * 3000)], limits=limits)
    err = refused("attachments", attachments=[att(content=b"x" * 3000)] * 2, limits=limits)
    assert "8000" in str(err)


def test_attachment_content_must_be_bytes() -> None:
    class Fake:
        filename = "a.pdf"
        content_type = "application/pdf"
        content = "not bytes"

    refused("attachments[0].content", attachments=[Fake()])


def test_attachments_must_be_a_list() -> None:
    refused("attachments", attachments="a.pdf")


# --- the event form ---------------------------------------------------------------------


def test_validate_event() -> None:
    event = EmailSendEvent(
        event_id="e1", recipient="ADA@EXAMPLE.COM", template="welcome", variables=WELCOME
    )
    assert validate_event(event, LIMITS, RENDERER) == "ADA@example.com"
    bad = EmailSendEvent(event_id="e2", recipient="a@b", template="welcome", variables=WELCOME)
    with pytest.raises(InvalidField, match="^recipient: "):
        validate_event(bad, LIMITS, RENDERER)


# --- property: nothing but InvalidField ever escapes --------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
weird = st.sampled_from([b"x", {1}, object(), Path("/"), 2**70, float("nan"), "\ud800", "\r\n"])
values = st.recursive(
    json_scalars | weird,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
variables = (
    st.dictionaries(
        st.sampled_from(["name", "product", "code", "reset_url", "expires_minutes"])
        | st.text(max_size=8),
        values,
        max_size=6,
    )
    | values
)
addresses = (
    st.text(max_size=80)
    | st.emails().map(str)
    | st.builds(
        lambda local, domain: f"{local}@{domain}", st.text(max_size=20), st.text(max_size=30)
    )
)
templates = st.sampled_from([*RENDERER.names(), "../x", "nope", ""]) | st.text(max_size=10)
attachments_st = st.none() | st.lists(
    st.builds(
        Attachment,
        filename=st.text(max_size=20),
        content_type=st.sampled_from(["application/pdf", "text/plain", "x/y"])
        | st.text(max_size=10),
        content=st.binary(max_size=64),
    ),
    max_size=3,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    recipient=addresses | json_scalars,
    template=templates,
    variables=variables,
    category=st.sampled_from(["transactional", "Bad"]) | st.text(max_size=10),
    subject=st.none() | st.text(max_size=300) | json_scalars,
    attachments=attachments_st,
)
def test_validate_request_returns_or_raises_invalid_field(
    recipient: Any, template: Any, variables: Any, category: Any, subject: Any, attachments: Any
) -> None:
    try:
        out = validate_request(
            recipient, template, variables, category, subject, attachments, LIMITS, RENDERER
        )
    except InvalidField as err:
        assert err.field and err.reason
    else:
        assert isinstance(out, str) and "@" in out


@settings(max_examples=200, deadline=None)
@given(variables=st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_valid_recipient_with_arbitrary_variables(variables: dict[str, Any]) -> None:
    try:
        check(variables={**WELCOME, **variables})
    except InvalidField as err:
        assert err.field in ("variables", "template")
