"""Following new generations: a background thread that serves what other processes commit."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from embeddings import ProjectError

if TYPE_CHECKING:
    from indexer.api import Takes

log = logging.getLogger("takes")


class GenerationFollower:
    """A background thread serving generations written by other processes (`takes add`) without a restart."""

    def __init__(self, takes: Takes, interval: float):
        self.takes, self.interval = takes, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="takes-reload", daemon=True)
        if interval > 0:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.takes.refresh():
                    log.info("serving generation %d", self.takes.generation)
            except ProjectError as error:
                # Keep serving the generation we have; say why the new one was refused.
                log.warning("not switching to the new index generation: %s", error)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
