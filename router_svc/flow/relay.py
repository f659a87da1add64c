"""A forwarded request's answer on its way back through a door: one relay for both doors.

The HTTP door reads the backend itself; through Envoy the ext_proc server sees the same bytes
as Envoy streams them. Either way the door feeds the answer to a ``Relay``, which decides
what the client gets (the usage-only chunk the router asked for on the client's behalf is
dropped) and records what the answer says: time to first token, backend latency, usage, and
the cache store of a complete 2xx answer. Nothing here does I/O except the cache store.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from router_svc.backend.sse_read import EventScan, extract_usage
from router_svc.cache.front import CacheFront
from router_svc.core.metrics import Metrics

if TYPE_CHECKING:
    from router_svc.flow.request import Forward

log = logging.getLogger(__name__)


class Relay:
    """One forwarded request's answer. Feed a streamed answer event by event (``keep``) and
    end it with ``stream_ended``; a JSON answer goes to ``json_ended`` once read whole."""

    def __init__(self, forward: Forward, cache: CacheFront, metrics: Metrics,
                 forwarded_at: float | None = None) -> None:
        self.forward = forward
        self.cache = cache
        self.metrics = metrics
        self.model = forward.routed.decision.model
        self.forwarded_at = time.perf_counter() if forwarded_at is None else forwarded_at
        self._scan = EventScan(forward.client_wants_usage)
        self._capture = cache.capture(forward.lookup, forward.routed.kind) \
            if forward.routed.stream else None

    @property
    def completed(self) -> bool:
        """The stream said ``data: [DONE]``."""
        return self._scan.completed

    @property
    def client_wants_usage(self) -> bool:
        return self._scan.client_wants_usage

    def keep(self, event: bytes) -> bool:
        """Whether the client gets this SSE event; records the first token and captures
        what the client gets for the cache."""
        had_output = self._scan.saw_output
        kept = self._scan.keep(event)
        if not had_output and self._scan.saw_output:
            self.metrics.observe_ttft(self.model, time.perf_counter() - self.forwarded_at)
        if kept and self._capture is not None:
            self._capture.feed(event)
        return kept

    async def stream_ended(self, *, clean: bool) -> None:
        """The stream is over. ``clean``: every event reached the client, and the backend
        did not fail mid-stream; only then, with ``[DONE]`` seen, is the answer stored."""
        self.metrics.observe_backend(self.model, time.perf_counter() - self.forwarded_at)
        self.metrics.count_tokens(self.model, self._scan.usage)
        if clean and self._scan.completed:
            await self._store(self.cache.store_stream(self.forward.lookup, self._capture,
                                                      self._scan.usage))

    async def json_ended(self, body: Any) -> None:
        """A whole 2xx JSON answer (None: unreadable or too large to read)."""
        self.metrics.observe_backend(self.model, time.perf_counter() - self.forwarded_at)
        if not isinstance(body, dict):
            return
        self.metrics.count_tokens(self.model, extract_usage(body))
        await self._store(self.cache.store_body(self.forward.lookup, self.forward.routed.kind,
                                                body))

    def failed(self, reason: str) -> None:
        """The backend failed (``backend.errors`` reasons)."""
        self.metrics.count_error(reason)

    async def _store(self, store: Any) -> None:
        # A failed store must not fail the answer, which has already gone to the client.
        try:
            await store
        except Exception:
            log.exception("cache store failed for a %s answer", self.model)
