"""One generation request through the router, whichever door it came in by.

A door hands over the body's bytes and the request headers; ``Exchange.decide`` says what
happens next, and the door only renders it:

- ``Local``: the router answers by itself (a cache hit, a PII refusal, a client mistake);
- ``Forward``: send ``body`` to ``target``; the answer comes back through a ``Relay``.

The flow is: repeat memo, route (parse, classify, select, PII policy), refusal, cache
lookup, forward. Every metric of a request is counted here once: the routing decision,
errors, the request's status and duration (``finish``) and the in-flight gauge. So is its
trace (``tracing.spans``, when ``tracing.enabled``): the request's span from ``begin`` to
``finish`` with the decision as attributes, and a span per backend call (``relay``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

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
from router_svc.tracing.spans import NO_CALL, NO_TRACE, RequestTrace, error_type

if TYPE_CHECKING:
    from router_svc.core.selection import Decision
    from router_svc.tracing.spans import BackendCall, Recorder, _NoCall, _NoTrace


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
                 gate: Gate | None = None, recorder: Recorder | None = None) -> None:
        self.router = router
        self.cache = cache
        self.metrics = metrics
        self.gate = gate or Gate.for_config(router.config)
        self.failover = Failover(router.config, router, metrics)
        self.recorder = recorder  # where spans go (tracing.provider); None: tracing off

    def begin(self, endpoint: Endpoint, headers: Mapping[str, str] | None = None,
              door: str = "http") -> Exchange:
        """``headers``: the request's, whose W3C ``traceparent`` the trace continues."""
        return Exchange(self, endpoint, headers, door)


class Exchange:
    """One request, from its body to the end of its answer."""

    def __init__(self, flow: RequestFlow, endpoint: Endpoint,
                 headers: Mapping[str, str] | None = None, door: str = "http") -> None:
        self.flow = flow
        self.endpoint = endpoint
        self.model = "none"  # the model it went to, once known
        self.allowed: frozenset[str] | None = None  # the models the caller's key may use
        self.status: int | None = None  # set by ``finish``
        self._t0 = time.perf_counter()
        flow.metrics.inflight_requests.inc()
        rec = flow.recorder
        self.trace: RequestTrace | _NoTrace = NO_TRACE if rec is None else RequestTrace(
            rec, f"POST {endpoint.path}", headers,
            {"http.request.method": "POST", "url.path": endpoint.path, "router.door": door})
        self._call: BackendCall | _NoCall = NO_CALL  # the backend call under way

    @staticmethod
    def check_media_type(content_type: str) -> None:
        """``content_type``: the media type without parameters ("" when absent)."""
        check_media_type(content_type)

    async def decide(self, raw: bytes, headers: Mapping[str, str],
                     peer: str | None = None) -> Outcome:
        """``peer``: the address the request came from (None: unknown, e.g. through Envoy),
        for ``auth.trusted_proxies``."""
        with self.trace.active():  # the request's span is the parent of what runs below
            return await self._decide(raw, headers, peer)

    async def _decide(self, raw: bytes, headers: Mapping[str, str],
                      peer: str | None) -> Outcome:
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
                self._traced(known.decision, None, "hit")
                return Local(replay_answer(known.headers, hit, body), "cache_hit")
            routed = await flow.router.route(kind, body, count_routing=False,
                                             allowed=caller.models, headers=headers)
            self.model = routed.decision.model
            if routed.rejection is not None:
                flow.router.count_decision(routed.decision)
                self._traced(routed.decision, routed, None)
                return Local(rejection_answer(routed), "pii_rejected")
            lookup = await flow.cache.lookup(routed, headers, caller)
            flow.router.count_decision(routed.decision, "cache_hit" if lookup.hit else None)
            self._traced(routed.decision, routed, lookup.state)
            if lookup.hit is not None:
                return Local(cache_answer(routed, lookup), "cache_hit")
        except RouterError as e:
            return self.error(e)
        return self._sent_to(self.flow.failover.first(Forward(routed, lookup, self.endpoint),
                                                      self.allowed))

    def _traced(self, d: Decision, routed: Routed | None, cache: str | None) -> None:
        """The decision on the request's span: names and numbers only, never the text (PII
        as the names of the types found)."""
        if not self.trace.recording:
            return
        attrs: dict[str, Any] = {
            "router.category": d.category or "none",
            "router.confidence": round(d.confidence, 4),
            "router.model": d.model,
            "router.reason": d.reason,
            "router.pii_types": tuple(sorted(d.pii_types)),
        }
        # As the x-router-* headers: the action and the PII check only when not the usual
        # (route; checked), which keeps the common span small.
        if d.action != "route":
            attrs["router.action"] = d.action
        if d.denied_pii_types:
            attrs["router.pii_denied"] = tuple(sorted(d.denied_pii_types))
        if routed is not None and routed.pii_status != "checked":
            attrs["router.pii_check"] = routed.pii_status
        if cache is not None:
            attrs["router.cache"] = cache
        self.trace.set(attrs)

    def _sent_to(self, fwd: Forward) -> Forward:
        if self.trace.recording and fwd.model != self.model:  # a failover's model
            self.trace.set({"router.model": fwd.model})
            if fwd.fallbacks:
                self.trace.set({"router.fallbacks": tuple(fwd.fallbacks)})
        self.model = fwd.model
        return fwd

    def failed(self, fwd: Forward, err: UpstreamError) -> Forward | None:
        """``fwd``'s backend failed before any byte reached the client: the request to send
        instead (another model, ``failover``), or None to answer ``err``."""
        self._call.fail(err.reason)
        self._call.end({"router.backend.status": err.status})
        nxt = self.flow.failover.next_after(fwd, err, self.allowed)
        return self._sent_to(nxt) if nxt is not None else None

    def answered(self, fwd: Forward, status: int = 200) -> None:
        """``fwd``'s backend answered (its status line was 2xx: ``status``)."""
        self._call.status(status)
        self.flow.failover.succeeded(fwd)

    def backend_status(self, fwd: Forward, status: int, retry_after: str | None) -> None:
        """What the backend answered, seen by a door that cannot re-send (Envoy sends the
        request): the breaker still learns, so the next requests skip a failing backend."""
        self._call.status(status)
        if 200 <= status < 300:
            self.flow.failover.succeeded(fwd)
        elif status == 429 or status >= 500:
            self.flow.failover.breakers.failure(
                fwd.model, parse_retry_after(retry_after) if status in (429, 503) else None)

    def error(self, err: RouterError, *, reason: str | None = None,
              headers: dict[str, str] | None = None) -> Local:
        """A domain error as the answer, counted under ``reason`` (default: by status)."""
        self.flow.metrics.count_error(reason or error_reason(err))
        self.trace.error(reason or error_type(err), err.status)
        return Local(error_answer(err, headers), f"error_{err.status}")

    def relay(self, forward: Forward, forwarded_at: float | None = None) -> Relay:
        """The relay of ``forward``'s answer; with tracing on, the backend call's span starts
        here and ``Relay.trace_headers`` carry it upstream."""
        if isinstance(self.trace, RequestTrace):
            self._call = self.trace.backend(
                "backend", backend_attributes(forward) if self.trace.recording else None)
        return Relay(forward, self.flow.cache, self.flow.metrics, forwarded_at, self._call)

    def finish(self, status: int) -> None:
        """Count the request once, with the status its client got (499: it left first)."""
        if self.status is not None:
            return
        self.status = status
        m = self.flow.metrics
        m.inflight_requests.dec()
        m.count_request(self.model, status)
        m.observe_request(self.endpoint.label, time.perf_counter() - self._t0)
        self.trace.end(status)


def backend_attributes(fwd: Forward) -> dict[str, Any]:
    """The backend call's span: where it goes and for which model; no credentials."""
    target = fwd.target
    return {"http.request.method": "POST",
            "url.full": target.url(fwd.endpoint.backend_path),
            "server.address": _host(target.base_url),
            "router.model": fwd.model,
            "gen_ai.request.model": target.model}


@functools.lru_cache(maxsize=256)
def _host(base_url: str) -> str:
    return urlsplit(base_url).hostname or ""
