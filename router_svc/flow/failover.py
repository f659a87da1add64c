"""The next model when a backend fails: circuit breakers per backend and the retarget.

A routed request whose backend fails before any byte of the answer reached the client
(connection error, a timeout before the headers, a 5xx, a 429) goes to the next model of
``core.selection.failover_order``, at most ``failover.max_retries`` times; a backend whose
breaker is open is skipped before it is tried. The door that sends the request calls
``next_after`` on such a failure and ``succeeded`` when an answer starts.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from router_svc.backend.errors import UpstreamError
from router_svc.config.loading import Config
from router_svc.core.breaker import Breakers
from router_svc.core.metrics import Metrics
from router_svc.core.pipeline import Router
from router_svc.core.selection import failover_order

if TYPE_CHECKING:  # request.py imports this module
    from router_svc.flow.request import Forward

FALLBACK_HEADER = "x-router-fallback"


def retryable(err: UpstreamError) -> bool:
    """A failure another model may not share: unreachable, timed out, overloaded, 5xx, 429.
    Any other 4xx is about the request itself and would fail anywhere."""
    return err.status == 429 or err.status >= 500


def why(err: UpstreamError) -> str:
    """The metric reason of a failover."""
    return "backend_rate_limited" if err.status == 429 else err.reason


class Failover:
    def __init__(self, config: Config, router: Router, metrics: Metrics) -> None:
        self.config = config
        self.router = router
        self.metrics = metrics
        f = config.failover
        self.breakers = Breakers(f.breaker_failures, f.breaker_cooldown_s,
                                 on_open=metrics.count_breaker_open)

    def candidates(self, fwd: Forward, allowed: frozenset[str] | None) -> list[str]:
        tried = {fwd.model, *fwd.tried}
        return [m for m in failover_order(self.config, fwd.routed.decision, allowed)
                if m not in tried and not self.breakers.is_open(m)]

    def first(self, fwd: Forward, allowed: frozenset[str] | None) -> Forward:
        """``fwd``, or the next model when its backend's breaker is open (no retry spent)."""
        if self.config.failover.max_retries == 0 or not self.breakers.is_open(fwd.model):
            return fwd  # failover off: every request goes where it was routed
        for m in self.candidates(fwd, allowed):
            self.metrics.count_fallback(fwd.model, m, "circuit_open")
            return self.retarget(fwd, m, "circuit open")
        return fwd  # nobody better: try it anyway rather than refuse

    def next_after(self, fwd: Forward, err: UpstreamError,
                   allowed: frozenset[str] | None) -> Forward | None:
        """The Forward to try after ``fwd`` failed with ``err``, or None (answer the error)."""
        if not retryable(err):
            return None
        self.breakers.failure(fwd.model, err.retry_after_s if err.status in (429, 503)
                              else None)
        if len(fwd.fallbacks) >= self.config.failover.max_retries:
            return None
        for m in self.candidates(fwd, allowed):
            self.metrics.count_fallback(fwd.model, m, why(err))
            return self.retarget(fwd, m, str(err.status))
        return None

    def succeeded(self, fwd: Forward) -> None:
        self.breakers.success(fwd.model)

    def retarget(self, fwd: Forward, model: str, reason: str) -> Forward:
        r = fwd.routed
        body = {**r.body, "model": self.config.model_config[model].backend.model}
        routed = dataclasses.replace(r, decision=dataclasses.replace(r.decision, model=model),
                                     body=body, target=self.router.target_for(model))
        # The answer comes from another model than the cache key's: not stored under it.
        lookup = dataclasses.replace(fwd.lookup, plan=None, memo=None)
        hop = f"{fwd.model} -> {model} ({reason})"
        return dataclasses.replace(fwd, routed=routed, lookup=lookup,
                                   fallbacks=(*fwd.fallbacks, hop),
                                   tried=(*fwd.tried, fwd.model))
