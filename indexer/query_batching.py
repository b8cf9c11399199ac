"""Query micro-batching: one worker thread owns the model calls and encodes
queries that arrive together in one ``encode(list)`` call.

On two cores, eight requests each running the model at once fight over the
same cores; one batched forward pass of eight short queries costs little more
than one. An idle server gains nothing from waiting, so the worker only
lingers (up to ``max_wait`` seconds) for company when the previous batch was
shared, i.e. when requests are in fact arriving together.

Nor does an idle server gain from the hand-off itself: waking the worker and
being woken back costs two thread switches (and two trips through the
interpreter lock) per query. A query that finds the model free and nobody
queued is encoded in its caller's thread; the model lock keeps that call and
the worker's batches from running the model at the same time, so the model
still sees one call at a time and queries that arrive while it runs are
batched as before.

Late interaction needs a query's token vectors too. The vector is their mean,
so the same model run gives both: a caller that wants them asks
``encode_one_with_tokens`` and the batch runs ``encode_with_tokens`` (the
model's tokens are only normalized for it, never computed twice).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger("takes")

MAX_BATCH = 32
MAX_WAIT_SECONDS = 0.003

_STOP = object()


class QueryBatcher:
    """Coalesces concurrent ``encode_one`` calls into batched ``encode`` calls.

    Args:
        encode: maps a list of texts to an (n, dim) float32 array; called only
            from the worker thread.
        max_batch: most queries encoded in one call.
        max_wait: longest the worker waits to fill a batch under load.
        on_start: run first in the worker thread (per-thread library settings).
        encode_with_tokens: maps a list of texts to their (n, dim) vectors and
            each text's (tokens, dim) token vectors from the same model runs;
            None: ``encode_one_with_tokens`` is not offered (``with_tokens`` False).
    """

    def __init__(
        self,
        encode: Callable[[Sequence[str]], np.ndarray],
        *,
        max_batch: int = MAX_BATCH,
        max_wait: float = MAX_WAIT_SECONDS,
        on_start: Callable[[], None] | None = None,
        encode_with_tokens: Callable[[Sequence[str]], tuple[np.ndarray, list[np.ndarray]]] | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be zero or more seconds, got {max_wait}")
        self._encode = encode
        self._encode_with_tokens = encode_with_tokens
        self._on_start = on_start
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # Counters for tests and the benchmark: batches < requests proves coalescing;
        # ``direct`` counts the queries encoded in their caller's thread (no hand-off).
        self.requests = 0
        self.batches = 0
        self.direct = 0
        # Held while the model runs, by the worker or by a caller encoding directly.
        self._model_lock = threading.Lock()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="takes-query-batcher", daemon=True)
        self._worker.start()

    @property
    def with_tokens(self) -> bool:
        """Whether ``encode_one_with_tokens`` gives token vectors from the same model run."""
        return self._encode_with_tokens is not None

    def submit(self, text: str, *, tokens: bool = False) -> Future:
        """A future for the (1, dim) vector of ``text`` (with ``tokens``: and its token vectors); await it with ``asyncio.wrap_future``."""
        if self._closed:
            raise RuntimeError("the query batcher is closed")
        if tokens and self._encode_with_tokens is None:
            raise ValueError("this batcher was given no encode_with_tokens")
        future: Future = Future()
        self._queue.put((text, future, tokens))
        return future

    def encode_one(self, text: str) -> np.ndarray:
        """The (1, dim) vector of ``text``; blocks the calling (pool) thread, never the event loop."""
        return self._one(text, False)

    def encode_one_with_tokens(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The (1, dim) vector of ``text`` and its (tokens, dim) token vectors, from one model run."""
        return self._one(text, True)

    def _one(self, text: str, tokens: bool):
        if not self._closed and self._queue.empty() and self._model_lock.acquire(blocking=False):
            try:
                # Checked again under the lock: a query queued meanwhile goes first, with company.
                if self._queue.empty():
                    result = self._results([text], [tokens])[0]
                    self.requests += 1
                    self.batches += 1
                    self.direct += 1
                    return result
            finally:
                self._model_lock.release()
        return self.submit(text, tokens=tokens).result()

    def _results(self, texts: list[str], wants_tokens: list[bool]) -> list:
        """Each text's vector, or (vector, token vectors) where its caller wants them: one model call for all."""
        if any(wants_tokens):
            vectors, matrices = self._encode_with_tokens(texts)
            return [(vectors[row : row + 1], matrices[row]) if wants else vectors[row : row + 1] for row, wants in enumerate(wants_tokens)]
        vectors = self._encode(texts)
        return [vectors[row : row + 1] for row in range(len(texts))]

    __call__ = encode_one

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._worker.join(timeout=5)

    def _collect(self, first) -> tuple[list, bool]:
        """``first`` plus whatever else is queued (waiting briefly when under load)."""
        batch, stop = [first], False
        deadline = time.monotonic() + (self.max_wait if self._last_size > 1 else 0.0)
        while len(batch) < self.max_batch:
            try:
                remaining = deadline - time.monotonic()
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        self._last_size = 1
        if self._on_start is not None:
            try:
                self._on_start()
            except Exception:  # noqa: BLE001 - a failed tweak must not stop the worker
                log.exception("query batcher: per-thread setup failed")
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            with self._model_lock:
                batch, stop = self._collect(first)
                live = [item for item in batch if item[1].set_running_or_notify_cancel()]
                self._last_size = len(batch)
                if live:
                    self.requests += len(live)
                    self.batches += 1
                    try:
                        results = self._results([text for text, _, _ in live], [tokens for _, _, tokens in live])
                    except BaseException as error:  # noqa: BLE001 - handed to every caller
                        for _, future, _ in live:
                            future.set_exception(error)
                    else:
                        for result, (_, future, _) in zip(results, live):
                            future.set_result(result)
            if stop:
                break
        # Callers that queued after close() must not wait forever.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP and item[1].set_running_or_notify_cancel():
                item[1].set_exception(RuntimeError("the query batcher is closed"))


__all__ = ["MAX_BATCH", "MAX_WAIT_SECONDS", "QueryBatcher"]
