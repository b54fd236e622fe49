"""What routes this worker holds, told to the backend: one Redis key per route, with an expiry.

A worker consumes the route queues of the routes it preloads (gpu_worker/contract.py
`gpu_queues_by_priority`). While one of those routes' models is loaded, `RouteAdvertiser` keeps
`route_held_key(name)` set in the broker's Redis with a ROUTE_HELD_TTL_SECONDS expiry: at once when the
model loads (`Runner.on_model_loaded`) and every ROUTE_HELD_REFRESH_SECONDS from its own thread. The
backend (apps/jobs/dispatch.py `route_held`) then sends that route's jobs to its queue. A route whose
model was dropped, or a worker that stopped or died, stops refreshing: the key expires within the TTL
and the next jobs go to the plain lane again. Keys are not deleted on stop (another worker may hold the
same route under the same key); a job sent to a route queue in that window waits for a worker that
preloads the route, or for the backend's watchdog.

Standard library and redis only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gpu_worker.contract import ROUTE_HELD_REFRESH_SECONDS, ROUTE_HELD_TTL_SECONDS, route_held_key

logger = logging.getLogger(__name__)


class RouteAdvertiser:
    """Advertises those of `routes` that `loaded()` names, through `client` (a redis.Redis whose calls
    time out)."""

    def __init__(
        self,
        client: Any,
        routes: Sequence[str],
        loaded: Callable[[], Iterable[str]],
        *,
        ttl_s: int = ROUTE_HELD_TTL_SECONDS,
        refresh_s: float = ROUTE_HELD_REFRESH_SECONDS,
    ) -> None:
        if not 0 < refresh_s < ttl_s:
            raise ValueError("the refresh interval must be shorter than the expiry")
        self.client = client
        self.routes = tuple(dict.fromkeys(routes))
        self.loaded = loaded
        self.ttl_s = ttl_s
        self.refresh_s = refresh_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def advertise(self, names: Iterable[str] | None = None) -> list[str]:
        """Sets (or refreshes) the key of each advertised route among `names` (default: those loaded);
        returns the routes advertised. A Redis error is logged: the next refresh tries again."""
        try:
            wanted = set(self.loaded() if names is None else names)
        except RuntimeError:  # the runner's model table changed while it was read: next time
            return []
        held = [name for name in self.routes if name in wanted]
        try:
            for name in held:
                self.client.set(route_held_key(name), "1", ex=self.ttl_s)
        except Exception:
            logger.warning("could not advertise the routes held (%s)", ", ".join(held), exc_info=True)
            return []
        return held

    def start(self) -> RouteAdvertiser:
        self.advertise()
        self._thread = threading.Thread(target=self._run, name="route-advertiser", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.refresh_s + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.advertise()
