"""One generation request through the router, whichever door it came in by.

A door hands over the body's bytes and the request headers; ``Exchange.decide`` says what
happens next, and the door only renders it:

- ``Local``: the router answers by itself (a cache hit, a PII refusal, a client mistake);
- ``Forward``: send ``body`` to ``target``; the answer comes back through a ``Relay``.

The flow is: repeat memo, route (parse, classify, select, PII policy), refusal, cache
lookup, forward. Every metric of a request is counted here once: the routing decision,
errors, the request's status and duration (``finish``) and the in-flight gauge.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router_svc.backend.errors import UpstreamError, parse_retry_after
from router_svc.backend.sse_read import ask_for_usage
from router_svc.cache.front import CacheFront, Lookup
from router_svc.core.auth import Gate
from router_svc.core.endpoints import Endpoint
from router_svc.core.errors import RouterError
from router_svc.core.metrics import Metrics
from router_svc.core.pipeline import Routed, Router
from router_svc.core.selection import BackendTarget
from router_svc.flow.answers import (
    LocalAnswer,
    cache_answer,
    check_media_type,
    error_answer,
    error_reason,
    parse_json_object,
    rejection_answer,
    replay_answer,
    wants_usage,
)
from router_svc.flow.failover import FALLBACK_HEADER, Failover
from router_svc.flow.relay import Relay


@dataclass(frozen=True)
class Local:
    """An answer the router makes itself. ``why``: cache_hit, pii_rejected or error_<status>."""

    answer: LocalAnswer
    why: str


@dataclass(frozen=True)
class Forward:
    """A routed request to send to its backend."""

    routed: Routed
    lookup: Lookup
    endpoint: Endpoint
    fallbacks: tuple[str, ...] = ()  # "phi4 -> mistral-small3.1 (503)", one per failover
    tried: tuple[str, ...] = ()  # models whose backends failed for this request

    @property
    def target(self) -> BackendTarget:
        assert self.routed.target is not None
        return self.routed.target

    @property
    def model(self) -> str:
        return self.routed.decision.model

    @property
    def body(self) -> dict[str, Any]:
        """What goes upstream; a stream always asks for usage (``Relay`` strips it again
        when the client did not ask)."""
        return ask_for_usage(self.routed.body) if self.routed.stream else self.routed.body

    @property
    def headers(self) -> dict[str, str]:
        """The ``x-router-*`` headers of the answer (also sent to the backend by Envoy)."""
        h = {**self.routed.headers(), **self.lookup.headers()}
        if self.fallbacks:
            h[FALLBACK_HEADER] = ", ".join(self.fallbacks)
        return h

    @property
    def client_wants_usage(self) -> bool:
        return wants_usage(self.routed)


Outcome = Local | Forward


class RequestFlow:
    """The decision path both doors share: one router, one cache, one set of metrics."""

    def __init__(self, router: Router, cache: CacheFront, metrics: Metrics,
                 gate: Gate | None = None) -> None:
        self.router = router
        self.cache = cache
        self.metrics = metrics
        self.gate = gate or Gate.for_config(router.config)
        self.failover = Failover(router.config, router, metrics)

    def begin(self, endpoint: Endpoint) -> Exchange:
        return Exchange(self, endpoint)


class Exchange:
    """One request, from its body to the end of its answer."""

    def __init__(self, flow: RequestFlow, endpoint: Endpoint) -> None:
        self.flow = flow
        self.endpoint = endpoint
        self.model = "none"  # the model it went to, once known
        self.allowed: frozenset[str] | None = None  # the models the caller's key may use
        self.status: int | None = None  # set by ``finish``
        self._t0 = time.perf_counter()
        flow.metrics.inflight_requests.inc()

    @staticmethod
    def check_media_type(content_type: str) -> None:
        """``content_type``: the media type without parameters ("" when absent)."""
        check_media_type(content_type)

    async def decide(self, raw: bytes, headers: Mapping[str, str],
                     peer: str | None = None) -> Outcome:
        """``peer``: the address the request came from (None: unknown, e.g. through Envoy),
        for ``auth.trusted_proxies``."""
        flow, kind = self.flow, self.endpoint.kind
        try:
            caller = flow.gate.identify(headers, peer)  # 401 before any work
            self.allowed = caller.models
            body = parse_json_object(raw)
            repeat = await flow.cache.repeat(kind, body, headers, caller)
            if repeat is not None:  # the very same request as a cached one: no model call
                known, hit = repeat
                self.model = known.decision.model
                flow.router.count_decision(known.decision, "cache_hit")
                return Local(replay_answer(known.headers, hit, body), "cache_hit")
            routed = await flow.router.route(kind, body, count_routing=False,
                                             allowed=caller.models, headers=headers)
            self.model = routed.decision.model
            if routed.rejection is not None:
                flow.router.count_decision(routed.decision)
                return Local(rejection_answer(routed), "pii_rejected")
            lookup = await flow.cache.lookup(routed, headers, caller)
            flow.router.count_decision(routed.decision, "cache_hit" if lookup.hit else None)
            if lookup.hit is not None:
                return Local(cache_answer(routed, lookup), "cache_hit")
        except RouterError as e:
            return self.error(e)
        return self._sent_to(self.flow.failover.first(Forward(routed, lookup, self.endpoint),
                                                      self.allowed))

    def _sent_to(self, fwd: Forward) -> Forward:
        self.model = fwd.model
        return fwd

    def failed(self, fwd: Forward, err: UpstreamError) -> Forward | None:
        """``fwd``'s backend failed before any byte reached the client: the request to send
        instead (another model, ``failover``), or None to answer ``err``."""
        nxt = self.flow.failover.next_after(fwd, err, self.allowed)
        return self._sent_to(nxt) if nxt is not None else None

    def answered(self, fwd: Forward) -> None:
        """``fwd``'s backend answered (its status line was 2xx)."""
        self.flow.failover.succeeded(fwd)

    def backend_status(self, fwd: Forward, status: int, retry_after: str | None) -> None:
        """What the backend answered, seen by a door that cannot re-send (Envoy sends the
        request): the breaker still learns, so the next requests skip a failing backend."""
        if 200 <= status < 300:
            self.flow.failover.succeeded(fwd)
        elif status == 429 or status >= 500:
            self.flow.failover.breakers.failure(
                fwd.model, parse_retry_after(retry_after) if status in (429, 503) else None)

    def error(self, err: RouterError, *, reason: str | None = None,
              headers: dict[str, str] | None = None) -> Local:
        """A domain error as the answer, counted under ``reason`` (default: by status)."""
        self.flow.metrics.count_error(reason or error_reason(err))
        return Local(error_answer(err, headers), f"error_{err.status}")

    def relay(self, forward: Forward, forwarded_at: float | None = None) -> Relay:
        return Relay(forward, self.flow.cache, self.flow.metrics, forwarded_at)

    def finish(self, status: int) -> None:
        """Count the request once, with the status its client got (499: it left first)."""
        if self.status is not None:
            return
        self.status = status
        m = self.flow.metrics
        m.inflight_requests.dec()
        m.count_request(self.model, status)
        m.observe_request(self.endpoint.label, time.perf_counter() - self._t0)
