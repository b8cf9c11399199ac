"""One writer thread for POST/DELETE /takes, apart from the threads that serve searches.

The index has one writer at a time anyway (the store's lock), so a write that
waits for it in the request thread pool only takes a thread a search could
use: 45 waiting POSTs once held a GET /search for 28 s. Writes queue here
instead, the handler awaits the result without holding a thread, and past
``max_queued`` waiting writes the server answers 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from indexer.errors import TakesError

T = TypeVar("T")

# What a refused client is told to wait: a write takes about a second or two.
RETRY_AFTER_SECONDS = 2


class WriterBusy(TakesError):
    """Too many writes are already waiting for the writer."""

    def __init__(self, queued: int):
        self.queued = queued
        super().__init__(
            f"the server already has {queued} writes waiting (TAKES_MAX_QUEUED_WRITES); "
            f"retry in {RETRY_AFTER_SECONDS} s"
        )


class WriteQueue:
    """Runs writes one at a time on a dedicated thread, refusing more than ``max_queued`` waiting."""

    def __init__(self, max_queued: int):
        self.max_queued = max_queued
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="takes-writer")
        self._lock = threading.Lock()
        self._pending = 0

    async def run(self, write: Callable[[], T]) -> T:
        # The running write counts too: max_queued=1 means one at a time, none waiting.
        with self._lock:
            if self._pending >= self.max_queued:
                raise WriterBusy(self._pending)
            self._pending += 1
        try:
            future = self._executor.submit(write)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        # A client that hangs up does not cancel the write: it may be committing.
        return await asyncio.shield(asyncio.wrap_future(future))

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
