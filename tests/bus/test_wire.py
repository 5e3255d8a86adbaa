"""actors.bus.wire: what the AMQP writer writes in one loop turn goes out in one send."""

from __future__ import annotations

import asyncio
import socket

from actors.bus.wire import MAX_FRAMES, CoalescingWriter


async def _pair() -> tuple[CoalescingWriter, asyncio.StreamReader, socket.socket]:
    a, b = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=a)
    b.setblocking(False)
    return CoalescingWriter(writer), reader, b


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def _read(peer: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < n:
        data += await loop.sock_recv(peer, n - len(data))
    return data


def test_one_turn_of_writes_is_one_send_in_order() -> None:
    async def main() -> None:
        writer, _, peer = await _pair()
        for i in range(5):
            writer.write(b"frame%d;" % i)
        assert writer.sends == 0  # nothing sent inside the turn
        await _turns(3)
        assert (writer.writes, writer.sends) == (5, 1)
        assert await _read(peer, 35) == b"frame0;frame1;frame2;frame3;frame4;"
        writer.close()
        peer.close()

    asyncio.run(main())


def test_a_batch_handed_over_a_frame_per_turn_is_still_one_send_up_to_a_bound() -> None:
    """aiormq's writer hands a big batch over ten frames at once (its queue holds ten),
    then one frame per loop iteration: still one send, until MAX_FRAMES."""

    async def main() -> None:
        writer, _, peer = await _pair()

        async def batch(frame: bytes, n: int) -> None:
            for _ in range(10):
                writer.write(frame)
            for _ in range(n - 10):
                await asyncio.sleep(0)
                writer.write(frame)
            await _turns(3)

        await batch(b"x", 30)
        assert (writer.writes, writer.sends) == (30, 1)
        await batch(b"y", MAX_FRAMES + 1)
        assert writer.sends == 3  # bounded: a send at MAX_FRAMES, then the one left over
        assert await _read(peer, 30 + MAX_FRAMES + 1) == b"x" * 30 + b"y" * (MAX_FRAMES + 1)
        writer.close()
        peer.close()

    asyncio.run(main())


def test_a_lone_frame_goes_at_the_end_of_its_turn() -> None:
    async def main() -> None:
        writer, _, peer = await _pair()
        writer.write(b"ack")
        await asyncio.sleep(0)  # the loop iteration after the write
        assert writer.sends == 1
        assert await _read(peer, 3) == b"ack"
        writer.close()
        peer.close()

    asyncio.run(main())


def test_drain_and_close_send_at_once() -> None:
    async def main() -> None:
        writer, _, peer = await _pair()
        writer.write(b"ping")
        await writer.drain()  # aiormq drains what must be out now (heartbeats, close)
        assert writer.sends == 1
        assert await _read(peer, 4) == b"ping"
        writer.write(b"bye")
        writer.close()
        assert writer.sends == 2
        assert await _read(peer, 3) == b"bye"
        await writer.wait_closed()
        peer.close()

    asyncio.run(main())
