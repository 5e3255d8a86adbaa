"""A broker restart is told by the bus, once; aio_pika's own lines about it stay out."""

from __future__ import annotations

import logging

import pytest

from actors.telemetry.logs import configure


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    named = {n: logging.getLogger(n).level for n in ("aio_pika", "aio_pika.tools",
                                                       "aio_pika.robust_connection")}  # fmt: skip
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in named.items():
        logging.getLogger(name).setLevel(value)


def test_aio_pikas_reconnection_chatter_is_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    configure("INFO")
    # The two lines a RabbitMQ restart printed, as aio_pika logs them.
    logging.getLogger("aio_pika.tools").error(
        "Callback <OneShotCallback: cb=...> error: ChannelInvalidStateError: No active transport"
    )
    logging.getLogger("aio_pika.robust_connection").warning(
        'Connection attempt to "amqp://guest:***@127.0.0.1:5672/" failed. Reconnecting after 5 s.'
    )
    logging.getLogger("aio_pika.queue").warning("something aio_pika still may say")
    err = capsys.readouterr().err
    assert "ChannelInvalidStateError" not in err
    assert "Connection attempt" not in err
    assert "something aio_pika still may say" in err
