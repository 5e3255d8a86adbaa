"""The distributed profile as real processes for tests: the harness of ``actors.testing.cluster``
with the test settings, and what the tests read from the SMTP server afterwards."""

from __future__ import annotations

import collections
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from actors.testing.cluster import ROOT, Cluster, delete_topology
from actors.testing.cluster import cluster_env as _cluster_env

__all__ = ["ROOT", "Cluster", "cluster_env", "delete_topology", "event_ids_received"]


def cluster_env(tmp_path: Path, es_url: str, amqp_url: str, smtp_port: int) -> dict[str, str]:
    """A cluster with names of its own, its data in *tmp_path*, sending to 127.0.0.1:*smtp_port*."""
    return _cluster_env(tmp_path, es_url, amqp_url, smtp_port, prefix="test.dist")


def event_ids_received(server: Any) -> collections.Counter[str]:
    """How many times the SMTP *server* received each eventId."""
    ids: collections.Counter[str] = collections.Counter()
    for m in server.messages():
        ids[message_from_bytes(m.data, policy=policy.default)["X-Mailactors-Event-Id"]] += 1
    return ids
