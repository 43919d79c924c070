"""Following the PostgreSQL change log (:meth:`PostgresFeedbackStore.follow
<agent.feedback.postgres.PostgresFeedbackStore.follow>`): a thread on its own ``LISTEN``
connection that calls back after each ``NOTIFY`` on :data:`CHANNEL` and also every ``interval``
seconds, so a change is applied within ``interval`` even if a notification is lost. A broken
connection is reopened, and a failed callback is retried at the next wake-up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from agent.feedback.events import StoreUnavailable

log = logging.getLogger(__name__)

CHANNEL = "hyrec_changes"  # NOTIFY channel of the change log


class Follower:
    """A thread on its own ``LISTEN`` connection (module doc); stopped by :meth:`stop`."""

    def __init__(self, url: str, on_change: Callable[[], None], interval: float) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self.url, self.on_change, self.interval = url, on_change, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hyrec-follow", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.url, autocommit=True, connect_timeout=max(1, round(self.interval))
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        self._call()  # also right after (re)connecting: changes made meanwhile
                        for _ in conn.notifies(timeout=self.interval, stop_after=1):
                            pass
            except psycopg.Error as e:
                log.warning("following the feedback database: %s; retrying", e)
                self._call()
                self._stop.wait(self.interval)

    def _call(self) -> None:
        try:
            self.on_change()
        except StoreUnavailable as e:  # retried at the next wake-up
            log.warning("applying shared changes: %s", e)
        except Exception:  # a failed apply is retried at the next wake-up
            log.exception("applying shared changes failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
