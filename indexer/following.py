"""Following new generations: a background thread that serves what other processes commit."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from embeddings import ProjectError

if TYPE_CHECKING:
    from indexer.api import Takes

log = logging.getLogger("takes")

# After a refused load the thread waits twice as long each time, from a second
# up to this: checking for a new generation is one tiny read and runs several
# times a second, but loading one that fails (and logging why) should not.
MAX_RETRY_WAIT = 30.0


def next_wait(interval: float, previous: float, failed: bool) -> float:
    """Seconds until the next check: ``interval`` after a success, else doubled from ``previous`` (1 s at least)."""
    if not failed:
        return interval
    return max(interval, min(MAX_RETRY_WAIT, max(1.0, 2 * previous)))


class GenerationFollower:
    """A background thread serving generations written by other processes (`takes add`) without a restart."""

    def __init__(self, takes: Takes, interval: float):
        self.takes, self.interval = takes, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="takes-reload", daemon=True)
        if interval > 0:
            self._thread.start()

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            try:
                if self.takes.refresh():
                    log.info("serving generation %d", self.takes.generation)
                wait = next_wait(self.interval, wait, failed=False)
            except ProjectError as error:
                # Keep serving the generation we have; say why the new one was refused.
                log.warning("not switching to the new index generation: %s", error)
                wait = next_wait(self.interval, wait, failed=True)
            except Exception as error:  # noqa: BLE001 - the thread must outlive any one failed look
                # The store could not even be read (out of file descriptors, a
                # database file that is not one): say so, and look again later.
                # A dead thread would serve the old generation forever, in silence.
                log.warning("cannot look for a new index generation: %s: %s", type(error).__name__, error)
                wait = next_wait(self.interval, wait, failed=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
