"""One socket write per loop turn for an AMQP connection, instead of one per frame.

aiormq's writer task takes one frame group (a publish: method, header and body; an ack)
off its queue at a time and hands each to the transport, which sends it at once when its
buffer is empty: one ``send()`` per publish and per ack. On loopback and on a loaded VM a
send is expensive (the receiver's TCP work and wake-up run in the sender's system call),
and profiles of the services put 16-18% of auth's and the email server's CPU there. The
bus hands a whole batch of publishes or acks across the edge together, so the frames of
a batch reach the writer together: :class:`CoalescingWriter` keeps what the writer
writes in one turn of the event loop and sends it as one buffer at the end of that turn
(``loop.call_soon``), or at once when the writer drains or closes. Bytes go out in the
order they were written, no later than the next loop iteration; nothing else changes.

It plugs in through aiormq's public ``TransportFactory`` hook, set by the connection
class given to ``aio_pika.connect`` (:class:`WireConnection`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from yarl import URL

__all__ = ["CoalescingTransportFactory", "CoalescingWriter", "WireConnection"]

MAX_FRAMES = 128  # writes gathered into one send at most
MAX_BYTES = 256 * 1024  # ... and bytes


class CoalescingWriter:
    """A ``StreamWriter`` that sends what was written in one loop turn as one buffer.

    Duck-typed for aiormq, which uses ``write``, ``drain``, ``close``, ``is_closing``,
    ``wait_closed`` and ``get_extra_info``. ``sends`` and ``writes`` count buffers sent
    and writes taken (writes / sends: frames per system call)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []
        self._size = 0  # bytes in _pending
        self._fresh = False  # written to since the last _tick
        self.writes = 0
        self.sends = 0

    @property
    def transport(self) -> asyncio.BaseTransport:
        return self._writer.transport

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._tick)
        self._pending.append(data)
        self._size += len(data)
        self._fresh = True
        self.writes += 1

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def _tick(self) -> None:
        # aiormq's frame queue holds 10 frames: a batch of 64 publishes reaches the writer
        # 10 at once, then one per loop iteration (each get wakes one waiting put). So
        # while a batch is coming (more than one frame, and the last iteration brought
        # more) wait another iteration, up to a bound: a batch goes in one send, and a
        # lone frame (a publish, an ack at light load) goes at the end of its turn.
        pending = len(self._pending)
        if self._fresh and 1 < pending < MAX_FRAMES and self._size < MAX_BYTES:
            self._fresh = False
            self._loop.call_soon(self._tick)
        else:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        self._size = 0
        self.sends += 1
        if not self._writer.is_closing():  # bytes for a closed transport are lost anyway
            self._writer.write(data)

    async def drain(self) -> None:
        self._flush()
        await self._writer.drain()

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    async def wait_closed(self) -> None:
        await self._writer.wait_closed()

    def can_write_eof(self) -> bool:
        return self._writer.can_write_eof()

    def write_eof(self) -> None:
        self._flush()
        self._writer.write_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._writer.get_extra_info(name, default)


class CoalescingTransportFactory(TransportFactory):
    """aiormq's own TCP or TLS transport (by the URL's scheme), behind a CoalescingWriter.

    ``writer`` is the last one made (one per connection), for statistics."""

    def __init__(self) -> None:
        self.writer: CoalescingWriter | None = None

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        inner = TLSTransportFactory() if url.scheme == "amqps" else TCPTransportFactory()
        reader, writer = await inner.create(url, **kwargs)
        self.writer = CoalescingWriter(writer)
        coalescing: Any = self.writer
        return reader, coalescing


class WireConnection(aio_pika.Connection):
    """aio-pika's connection, with aiormq's transport behind a :class:`CoalescingWriter`.

    aio-pika hands ``self.kwargs`` to ``aiormq.connect``, whose ``transport_factory``
    is public; keyword arguments of ``aio_pika.connect`` cannot carry it (they also
    become the URL's query)."""

    def __init__(self, url: URL, *args: Any, **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        self.wire = CoalescingTransportFactory()
        self.kwargs["transport_factory"] = self.wire
