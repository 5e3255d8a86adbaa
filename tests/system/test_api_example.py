"""The README's API example (grpclib) runs as printed against ``supervisor.py up``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import trio

from tests.support.embedded_process import ROOT, embedded_env, running_embedded, wait_maildir

pytestmark = pytest.mark.trio


async def test_readme_api_example_runs_and_prints_what_the_readme_says(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    example = next(b for b in blocks if b.startswith("# api_example.py"))
    script = tmp_path / "api_example.py"
    script.write_text(example)
    env = embedded_env(tmp_path, MAILACTORS__API__SENDERS='["example.com"]')
    port = env["MAILACTORS__GRPC__AUTH_PORT"]
    async with running_embedded(env, tmp_path / "up.log"):
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, str(script), "127.0.0.1", port],
                env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_stdout=True,
                capture_stderr=True, check=False,
            )
        messages = await wait_maildir(tmp_path / "maildir", 3)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == [
        "requested PENDING",
        "later SCHEDULED",
        "cancelled CANCELLED",
        "batch 0 PENDING",
        "batch 1 requests[1].recipient: An email address must have an @-sign.",
        "batch 2 PENDING",
        "found 1",
    ]
    first = next(m for m in messages if str(m["To"]) == "ada@example.com")
    assert str(first["From"]) == "Example News <news@example.com>" and first["Bcc"] is None
