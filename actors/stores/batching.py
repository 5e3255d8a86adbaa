"""A base for actors that write in batches: what is waiting, up to N items or T milliseconds.

Stores are fast per batch and slow per item (DESIGN.md: Elasticsearch bulk
index about 10x single index), so writers collect work and flush it together.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, TypeVar

import msgspec
import trio

from actors.domain.edges import StoreUnavailable
from runtime import Actor, Failed, Reply

T = TypeVar("T")
R = TypeVar("R")


class Flush(msgspec.Struct, frozen=True):
    """Sent by the batch timer to its own actor: flush batch ``generation``."""

    generation: int


class _Gather:
    """The results of one ``put_many``, collected across batches."""

    __slots__ = ("reply", "results", "left", "done")

    def __init__(self, reply: Reply, n: int) -> None:
        self.reply = reply
        self.results: list[Any] = [None] * n
        self.left = n
        self.done = False


class _Part:
    """Stands for a Reply for one item of a ``put_many``."""

    __slots__ = ("gather", "index")

    def __init__(self, gather: _Gather, index: int) -> None:
        self.gather = gather
        self.index = index

    def set(self, result: Any) -> None:
        g = self.gather
        g.results[self.index] = result
        g.left -= 1
        if g.left == 0 and not g.done:
            g.done = True
            g.reply.set(g.results)

    def fail(self, exc: BaseException) -> None:
        g = self.gather
        if not g.done:
            g.done = True
            g.reply.fail(exc)


class BatchingActor(Actor[Any], Generic[T]):
    """Collects items (and the replies owed for them) and calls :meth:`flush`.

    The actor takes everything waiting in its mailbox in one turn (the runtime's
    ``receive_batch``), puts each message's items in the batch with :meth:`collect`
    and flushes once the mailbox holds nothing more (group commit), when the
    batch holds ``batch_size`` items, or ``batch_ms`` after its first item when
    ``linger`` keeps it open, whichever comes first, and on a graceful stop.
    A message :meth:`collect` refuses fails alone: its asker gets the error.
    """

    mailbox: ClassVar[int] = 4096
    batch: ClassVar[int] = 4096  # one turn takes all that is waiting, up to this many

    def __init__(self, batch_size: int, batch_ms: float) -> None:
        self.batch_size = batch_size
        self.batch_ms = batch_ms
        self.items: list[T] = []
        self.replies: list[Reply | _Part | None] = []
        self.generation = 0
        self.flushes = 0  # batches written; flushed / flushes is the mean batch size
        self._last_flush = -math.inf
        self.flushed = 0
        self.store_retries = 0  # writes retried because the store was unavailable

    async def write_until_stored(
        self,
        write: Callable[[], Awaitable[R]],
        log: logging.Logger,
        store: str,
        batch: str,
        max_delay: float,
    ) -> R:
        """``await write()``, again while it raises StoreUnavailable, the pause doubling
        (jittered) from 50 ms up to *max_delay*: a batch waits for its store, never dropped.
        *store* and *batch* name them in the warning ("store", "3 status updates")."""
        delay = 0.05
        while True:
            try:
                return await write()
            except StoreUnavailable as exc:
                self.store_retries += 1
                log.warning("%s unavailable, retrying %s in %.2fs: %s", store, batch, delay, exc)
                await trio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(max_delay, delay * 2)

    def collect(self, msg: Any, index: int) -> None:
        """Put the items of one message (never a :class:`Flush`) in the batch, with
        :meth:`put` or :meth:`put_many`; ``self.ctx.reply_later(index)`` takes over the
        answer to an ask. Raise to refuse the message alone."""
        raise NotImplementedError

    def put(self, item: T, reply: Reply | None) -> None:
        """Add one item; ``reply`` (if any) gets its result when its batch is written."""
        self.items.append(item)
        self.replies.append(reply)

    def put_many(self, items: list[T], reply: Reply) -> None:
        """Add several items owed one reply: the list of their results, in order.

        The items may land in different batches; the reply is set when the last
        of them is flushed, or failed by the first batch that fails.
        """
        if not items:
            reply.set([])
            return
        gather = _Gather(reply, len(items))
        self.items.extend(items)
        self.replies.extend(_Part(gather, i) for i in range(len(items)))

    async def receive_batch(self, msgs: list[Any]) -> list[Any]:
        results: list[Any] = [None] * len(msgs)
        first = not self.items  # the batch was empty (its timer is not running)
        for i, msg in enumerate(msgs):
            if type(msg) is Flush:
                if msg.generation == self.generation and self.items:
                    await self._flush()
                    first = True
                continue
            try:
                self.collect(msg, i)
            except Exception as exc:
                results[i] = Failed(exc)
            while len(self.items) >= self.batch_size:
                await self._flush()
                first = True
        if self.items:
            if self.ctx.mailbox_depth() == 0:
                # One pass of the scheduler before deciding: senders that are ready now
                # (woken by the last batch's replies) add to this batch rather than each
                # starting a small one. No time passes; at light load it is one yield.
                await trio.lowlevel.checkpoint()
            await self._after_add(first)
        return results

    async def _after_add(self, first: bool) -> None:
        """``first``: the batch was empty before these items (its timer is not running)."""
        # Group commit: flush as soon as nothing more is queued. Under light load
        # that is at once; under load the mailbox fills while the last batch is
        # written, and the next turn takes all of it. batch_ms bounds the wait
        # when items trickle in while other messages keep the mailbox non-empty.
        if self.batch_ms <= 0 or (self.ctx.mailbox_depth() == 0 and not self._busy()):
            await self._flush()
        elif first:
            self.ctx.start_soon(self._timer, self.generation)

    # Off by default: a writer whose latency matters flushes whenever its mailbox is empty.
    linger: ClassVar[bool] = False

    def _busy(self) -> bool:
        """With ``linger``: the last batch was written less than ``batch_ms`` ago, so
        items keep coming; let this batch fill for up to ``batch_ms`` (fewer, larger
        writes). Under light load the last flush is long past and nothing waits."""
        return self.linger and trio.current_time() - self._last_flush < self.batch_ms / 1000

    async def _timer(self, generation: int) -> None:
        await trio.sleep(self.batch_ms / 1000)
        if generation == self.generation:
            await self.ctx.self_ref.send(Flush(generation))

    async def _flush(self) -> None:
        """Write the first ``batch_size`` items (all of them, usually)."""
        size = self.batch_size
        items, replies = self.items[:size], self.replies[:size]
        del self.items[:size], self.replies[:size]
        self.generation += 1
        self.flushes += 1
        self.flushed += len(items)
        self._last_flush = trio.current_time()
        try:
            results = await self.flush(items)
        except Exception as exc:
            for reply in replies:
                if reply is not None:
                    reply.fail(exc)
            raise
        for reply, result in zip(replies, results, strict=True):
            if reply is not None:
                if type(result) is Failed:
                    reply.fail(result.error)
                else:
                    reply.set(result)

    async def flush(self, items: list[T]) -> list[Any]:
        """Write ``items``; return one result per item (the reply to its ask), or
        :class:`runtime.Failed` for an item that failed alone. Raising fails them all
        (and the actor)."""
        raise NotImplementedError

    async def stopping(self) -> None:
        while self.items:
            await self._flush()
