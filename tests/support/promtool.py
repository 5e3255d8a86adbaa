"""``promtool check metrics``: a metrics page as Prometheus's own checker sees it.

promtool comes with Debian's ``prometheus`` package (``make metrics-deps``). Without it a
check skips, and fails under REQUIRE_SERVICES=1 (CI installs it).
"""

from __future__ import annotations

import shutil
import subprocess

from tests.support.services import missing


def check_metrics(page: str) -> None:
    """Fail with promtool's findings unless ``page`` passes ``promtool check metrics``."""
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool is not installed (make metrics-deps)")
    done = subprocess.run(
        [promtool, "check", "metrics"], input=page.encode(), capture_output=True, timeout=30
    )
    findings = (done.stdout + done.stderr).decode()
    assert done.returncode == 0 and not findings.strip(), f"promtool check metrics:\n{findings}"
