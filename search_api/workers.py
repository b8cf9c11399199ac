"""Several server processes on one listening socket: `takes serve --workers N`.

One Python process serves one core's worth of Python at a time (the
interpreter lock), so on a machine with several cores the server forks N
workers after binding the port. Each worker loads its own ``Takes`` (model,
index, SQLite connections) and runs its own uvicorn loop on the shared socket,
taking new connections in turn with the others (``share_accepts``).

The parent loads nothing and starts no thread before forking (a fork copies
only the calling thread, so a lock held by another thread would stay held in
the child forever); it only supervises: it reports a worker that fails to
start as one line and stops the others, replaces a worker that dies later,
and on SIGTERM or SIGINT stops every worker the way uvicorn stops one
(requests in flight finish). Workers are in their own process group, so a
Ctrl-C reaches them once, through the parent, and they get SIGTERM if the
parent dies (Linux).

The index is shared the way two `takes` processes share it today: readers
never write its files, writes take the store's lock (one writer at a time
across all workers and `takes add`), and every worker follows new generations
(``Takes.follow``). Limits kept in memory are per worker:
TAKES_MAX_CONNECTIONS and TAKES_MAX_QUEUED_WRITES.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable

from indexer.errors import TakesError

log = logging.getLogger("takes")

# A worker that dies within this many seconds of starting is not replaced at once
# (a crash at every start would otherwise fork forever).
RESPAWN_BACKOFF_SECONDS = 1.0
READY = b"ready\n"


class WorkerFailed(TakesError):
    """A worker process could not start (its own one-line reason)."""


def _die_with_parent() -> None:
    """SIGTERM this process when its parent dies (Linux prctl); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def worker_cores(count: int) -> list[int] | None:
    """The core each of ``count`` workers is held to, or None to leave them to the kernel.

    Two or more workers, and a core of this process's affinity mask for each:
    worker ``slot`` runs on ``cores[slot]``. A Python process moving between
    cores pays for it twice: the interpreter lock is handed between threads
    on different cores (a search thread, the lexical thread, the event loop),
    and the worker's caches go cold. Held to one core each, two workers under
    8 clients answered with a p99 about a fifth lower and used up to 17% less
    CPU a request (docs/PERFORMANCE.md, "Each worker on its own core"). One worker
    is left free: it would lose the second core its model runs and lexical
    thread use.
    """
    cores = _my_cores()
    if cores is None or count < 2 or count > len(cores):
        return None
    return cores[:count]


def _my_cores() -> list[int] | None:
    """The cores of this process's affinity mask, in order; None where the platform does not say."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _hold_to_core(core: int) -> None:
    """This process (and the threads it starts later) on ``core`` only; a refusal leaves it where it was."""
    try:
        os.sched_setaffinity(0, {core})
    except OSError as error:
        log.warning("worker %d stays on every core: cannot hold it to core %d (%s)", os.getpid(), core, error.strerror or error)


class Supervisor:
    """Forks ``count`` workers, each running ``run_worker(ready, slot)``; waits for them.

    ``run_worker`` loads what it serves, calls ``ready()`` once it can answer,
    then serves until SIGTERM and returns; a ``TakesError`` it raises before
    ``ready()`` is the reason the whole server stops. ``slot`` (0 to count - 1)
    is the worker's place among them, which a replacement takes over.
    ``pin``: hold each slot to a core of its own where ``worker_cores`` finds
    one for each (``cores``, else None).
    """

    def __init__(self, count: int, run_worker: Callable[[Callable[[], None], int], None], pin: bool = False):
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.count = count
        self.run_worker = run_worker
        self.cores = worker_cores(count) if pin else None
        self.workers: dict[int, int] = {}  # pid -> slot
        self._stopping = False

    # -- the child ------------------------------------------------------------

    def _child(self, write_end: int, slot: int) -> None:
        """In the forked worker: never returns (exits with the worker's status)."""
        status = 0
        try:
            os.setpgid(0, 0)
            _die_with_parent()
            # Before anything loads: every thread the worker starts inherits the core.
            if self.cores is not None:
                _hold_to_core(self.cores[slot])
            for name in ("SIGTERM", "SIGINT", "SIGHUP"):
                signal.signal(getattr(signal, name), signal.SIG_DFL)

            def ready() -> None:
                os.write(write_end, READY)

            self.run_worker(ready, slot)
        except TakesError as error:
            status = 1
            _tell(write_end, f"error {error}")
        except KeyboardInterrupt:
            status = 0
        except BaseException as error:  # noqa: BLE001 - said to the parent, then the worker exits
            status = 1
            log.exception("worker %d failed", os.getpid())
            _tell(write_end, f"error {type(error).__name__}: {error}")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    def _spawn(self, slot: int) -> tuple[int, int]:
        """Fork the worker for ``slot``; (pid, read end of its readiness pipe)."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            self._child(write_end, slot)
        os.close(write_end)
        self.workers[pid] = slot
        return pid, read_end

    @staticmethod
    def _read_line(read_end: int) -> str:
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = os.read(read_end, 4096)
            except InterruptedError:
                continue
            if not chunk:
                break
            data += chunk
        os.close(read_end)
        return data.decode("utf-8", "replace").strip()

    # -- the parent -----------------------------------------------------------

    def _signal_workers(self, signum: int) -> None:
        for pid in list(self.workers):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _on_stop_signal(self, signum, frame) -> None:
        # A second Ctrl-C forwards again: uvicorn then stops without waiting.
        self._stopping = True
        self._signal_workers(signal.SIGTERM)

    def start(self) -> list[int]:
        """Fork every worker and wait until each can answer; WorkerFailed (every worker stopped) if one cannot."""
        for name in ("SIGTERM", "SIGINT", "SIGHUP"):
            signal.signal(getattr(signal, name), self._on_stop_signal)
        pending = [self._spawn(slot) for slot in range(self.count)]
        for pid, read_end in pending:
            line = self._read_line(read_end)
            if line != READY.decode().strip():
                self._stopping = True
                self._signal_workers(signal.SIGTERM)
                self._reap_all()
                reason = line.removeprefix("error ") or f"worker {pid} exited before it could serve"
                raise WorkerFailed(reason)
        return list(self.workers)

    def _reap_all(self) -> None:
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                self.workers.clear()
                return
            self.workers.pop(pid, None)

    def wait(self, on_replaced: Callable[[int, int], None] | None = None) -> int:
        """Serve until stopped: replace a worker that dies; 0 once every worker stopped on a signal."""
        started_at = {pid: time.monotonic() for pid in self.workers}
        while self.workers:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            slot = self.workers.pop(pid, None)
            if slot is None or self._stopping:
                continue
            # Died on its own (a crash, the OOM killer): the others keep serving meanwhile.
            lived = time.monotonic() - started_at.pop(pid, time.monotonic())
            if lived < RESPAWN_BACKOFF_SECONDS:
                time.sleep(RESPAWN_BACKOFF_SECONDS - lived)
            if self._stopping:
                continue
            log.warning("worker %d exited (%s); starting another", pid, _describe_status(status))
            new_pid, read_end = self._spawn(slot)
            started_at[new_pid] = time.monotonic()
            line = self._read_line(read_end)
            if line != READY.decode().strip():
                log.warning("the replacement worker could not start: %s", line.removeprefix("error "))
            elif on_replaced is not None:
                on_replaced(pid, new_pid)
        return 0


def _tell(write_end: int, line: str) -> None:
    """Send ``line`` to the parent; it stops listening once the worker said it is ready."""
    try:
        os.write(write_end, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"status {os.WEXITSTATUS(status)}"


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    cores = _my_cores()
    return len(cores) if cores is not None else os.cpu_count() or 1


# A worker holding more connections than another waits for that one to take
# the next connection, but no longer than this (it may be busy, or dying).
ACCEPT_DEFER_SECONDS = 0.01
# How often a worker re-reads the others' counts while it defers.
ACCEPT_POLL_SECONDS = 0.001
# How often a worker publishes its count, so connections it closed are seen.
PUBLISH_SECONDS = 0.1
# Out of file descriptors or memory: how long to wait before accepting again
# (asyncio's own ACCEPT_RETRY_DELAY).
ACCEPT_RETRY_SECONDS = 1.0


class ConnectionCounts:
    """Each worker's open connections, in memory the workers share (made before they fork)."""

    def __init__(self, workers: int):
        self._counts = multiprocessing.RawArray("q", workers)

    def publish(self, slot: int, count: int) -> None:
        self._counts[slot] = count

    def fewest_elsewhere(self, slot: int) -> int | None:
        """The fewest connections another worker holds; None when there is no other."""
        others = [count for index, count in enumerate(self._counts) if index != slot]
        return min(others) if others else None


def share_accepts(server_class: type, counts: ConnectionCounts, slot: int) -> type:
    """``server_class`` (uvicorn.Server) taking connections from a shared socket in turn with the other workers.

    asyncio and uvloop accept every connection waiting on the socket in one
    wake-up, so when 8 clients connect at once the worker that wakes first
    takes most of them (5/3, 6/2 and 7/1 of the benchmark's 8 keep-alive
    connections), and its clients wait behind each other while the other
    worker idles. Here each worker runs its own accept loop, one connection
    at a time, handed to uvicorn's protocol exactly as uvicorn's server would;
    a worker that holds more connections than another first gives that one
    up to ``ACCEPT_DEFER_SECONDS`` to take the next. Counts are published in
    ``counts`` at every accept and every ``PUBLISH_SECONDS``.
    """

    class SharedSocketServer(server_class):
        async def startup(self, sockets=None):
            # uvicorn sets up everything but the listening server; the loops below are that.
            await super().startup(sockets=[])
            if self.should_exit:
                return
            loop = asyncio.get_running_loop()
            counts.publish(slot, 0)
            tasks = [loop.create_task(self._accept_forever(sockets)), loop.create_task(self._publish_forever())]
            self.servers.append(_AcceptLoop(tasks))

        def _protocol(self):
            return self.config.http_protocol_class(config=self.config, server_state=self.server_state, app_state=self.lifespan.state)

        def _held(self) -> int:
            held = len(self.server_state.connections)
            counts.publish(slot, held)
            return held

        async def _publish_forever(self) -> None:
            while True:
                self._held()
                await asyncio.sleep(PUBLISH_SECONDS)

        async def _wait_turn(self) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + ACCEPT_DEFER_SECONDS
            while loop.time() < deadline:
                fewest = counts.fewest_elsewhere(slot)
                if fewest is None or self._held() <= fewest:
                    return
                await asyncio.sleep(ACCEPT_POLL_SECONDS)

        async def _accept_forever(self, sockets) -> None:
            loop = asyncio.get_running_loop()
            (listener,) = sockets
            listener.setblocking(False)
            while True:
                # A connection is waiting: take it if it is this worker's turn
                # (another worker may take it first, then accept says so).
                await _readable(loop, listener)
                await self._wait_turn()
                try:
                    connection, _address = listener.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError as error:
                    if error.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.exception("worker %d stopped accepting connections", os.getpid())
                        self.should_exit = True
                        return
                    log.warning("worker %d cannot accept a connection (%s); retrying in %.0f s", os.getpid(), error.strerror, ACCEPT_RETRY_SECONDS)
                    await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                    continue
                connection.setblocking(False)
                try:
                    await loop.connect_accepted_socket(self._protocol, connection)
                except OSError:
                    connection.close()  # the client went away between accept and set-up
                self._held()

    return SharedSocketServer


async def _readable(loop: asyncio.AbstractEventLoop, listener) -> None:
    """Until ``listener`` has a connection waiting (which this worker may or may not get)."""
    waiting = loop.create_future()

    def ready() -> None:
        if not waiting.done():
            waiting.set_result(None)

    loop.add_reader(listener.fileno(), ready)
    try:
        await waiting
    finally:
        loop.remove_reader(listener.fileno())


class _AcceptLoop:
    """What uvicorn's shutdown asks of a listening server: stop accepting, then be waited for."""

    def __init__(self, tasks: list[asyncio.Task]):
        self.tasks = tasks

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["ConnectionCounts", "Supervisor", "WorkerFailed", "cpu_count", "share_accepts", "worker_cores"]
