"""Auth's eventIds: random UUIDs (version 4) from a pooled os.urandom, never repeated."""

from __future__ import annotations

import os
import uuid

from actors.auth import service
from actors.auth.service import event_id_for


def test_random_event_ids_are_version_4_uuids_and_distinct_across_refills() -> None:
    ids = [event_id_for(None) for _ in range(1000)]  # about four refills of the pool
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == value


def test_an_idempotency_key_names_the_same_email_every_time() -> None:
    assert event_id_for("order-42") == event_id_for("order-42") != event_id_for("order-43")


def test_a_forked_child_does_not_reuse_the_parent_s_bytes() -> None:
    event_id_for(None)  # the pool holds bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, event_id_for(None).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert child != event_id_for(None)
    assert service._random_bytes.pool  # the parent's pool was not emptied by the fork
