"""``supervisor.py up --profile distributed``: the three services as supervised OS processes.

The launcher is an actor tree like any other: each service process is a
:class:`runtime.ProcessActor`, started in dependency order (integration,
the email-server workers, auth), each only once it printed its ready line,
restarted with backoff when it crashes, and stopped in reverse order with a
drain timeout on SIGINT/SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from actors.profiles.distributed import READY
from config import Config
from runtime import Backoff, ChildSpec, ProcessActor, ProcessExited, Strategy, SupervisorSpec

SUPERVISOR = str(Path(__file__).resolve().parent.parent.parent / "supervisor.py")


def worker_env(config: Config, workers: int) -> dict[str, str]:
    """Each worker gets 1/N of the provider's and every domain's budget."""
    if workers <= 1:
        return {}
    t = config.throttle
    env = {"MAILACTORS__THROTTLE__BURST": str(max(1, t.burst // workers))}
    if t.rate > 0:
        env["MAILACTORS__THROTTLE__RATE"] = repr(t.rate / workers)
    if t.per_domain:
        env["MAILACTORS__THROTTLE__PER_DOMAIN"] = json.dumps(
            {d: r / workers for d, r in t.per_domain.items()}
        )
    if t.max_connections:  # concurrent sends to the provider, shared out like the rates
        env["MAILACTORS__THROTTLE__MAX_CONNECTIONS"] = str(max(1, t.max_connections // workers))
    return env


class SaidElsewhere(logging.Filter):
    """Leaves out the supervisor's "X failed to start" line for a launched process.

    What the process said is above it, line by line with its prefix; a restart that fails
    is logged again as "X failed: ..." with the process's last lines; a failed start of
    the launcher ends it with supervisor.py's one line. This line only repeated them, as
    one escaped string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "runtime.supervisor" or "failed to start" not in str(record.msg):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        error = args[-1] if args else None
        while isinstance(error, BaseException):
            if isinstance(error, ProcessExited):
                return False
            error = error.__cause__
        return True


def check_secrets(config: Config) -> None:
    """Resolve every secret the processes will need; a missing one raises ConfigError here,
    before any process starts, instead of in each of them."""
    config.grpc.token()
    config.control.token()
    if config.bus.kind != "memory":
        config.bus.resolved_url()
    if config.store.kind != "sqlite":
        config.store.resolved_url()
        config.store.password()
        config.store.api_key()
    if config.provider.kind in ("smtp", "chain"):
        config.provider.smtp.password()


def launcher_tree(
    config: Config,
    profile: str,
    *,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    drain_s: float = 30.0,
    ready_timeout: float = 60.0,
) -> SupervisorSpec:
    base = dict(os.environ if env is None else env)

    def process(name: str, service: str, extra: Mapping[str, str] | None = None) -> ChildSpec:
        child_env = {**base, **(extra or {})}
        return ChildSpec(
            name,
            ProcessActor,
            args=([sys.executable, "-u", SUPERVISOR, "--profile", profile, "run", service],),
            kwargs={
                "env": child_env,
                "ready_marker": f"{READY} {service}",
                "ready_timeout": ready_timeout,
                "prefix": f"[{name}] ",
            },
            shutdown=drain_s,
        )

    share = worker_env(config, workers)
    children = [
        process("integration", "integration"),
        # MAILACTORS_WORKER: the worker's index names its control socket and offsets its ports.
        *(
            process(f"email-server-{i}", "email-server", {**share, "MAILACTORS_WORKER": str(i)})
            for i in range(workers)
        ),
        process("auth", "auth"),
    ]
    return SupervisorSpec(
        "mailactors",
        children,
        strategy=Strategy.ONE_FOR_ONE,
        intensity=5,
        period=60.0,
        backoff=Backoff(initial=0.5, maximum=10.0, reset_after=30.0),
        shutdown=drain_s * (workers + 2),
    )
