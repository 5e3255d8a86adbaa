"""``supervisor.py templates list`` and ``templates preview``: rendered, nothing sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.embedded_process import SUPERVISOR


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("MAILACTORS_PROFILE", None)
    return subprocess.run(
        [sys.executable, SUPERVISOR, "templates", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_list_names_parts_and_variables() -> None:
    done = _cli("list", "--json")
    assert done.returncode == 0, done.stderr
    by_name = {t["name"]: t for t in map(json.loads, done.stdout.splitlines())}
    assert by_name["welcome"] == {"name": "welcome", "parts": "text+html",
                                  "variables": ["name", "product"]}  # fmt: skip
    assert {"verification", "password-reset"} <= set(by_name)


def test_preview_renders_text_and_html_and_names_a_missing_variable() -> None:
    done = _cli("preview", "welcome", "--var", "name=<Ada>", "--var", "product=Acme")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("Subject: Welcome to Acme, <Ada>!\n")
    assert "--- text ---\nHello <Ada>," in out
    assert "--- html ---" in out and "&lt;Ada&gt;" in out  # HTML autoescaped, as when sent
    missing = _cli("preview", "welcome", "--var", "name=Ada")
    assert missing.returncode == 1
    assert "missing variable 'product'" in missing.stderr
    unknown = _cli("preview", "../etc")
    assert unknown.returncode == 1 and "error:" in unknown.stderr
