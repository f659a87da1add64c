"""Every Prometheus metric of the router, with the buckets and label sets defined once.

Use the ``count_*`` / ``observe_*`` helpers of ``Metrics``: they keep label values bounded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from router_svc.core.selection import REASONS
from router_svc.labels import CATEGORIES, PII_TYPES

OTHER = "other"
PREFIX = "router_"

# ---------------------------------------------------------------------------- buckets

# End to end and backend time: a cached answer in milliseconds up to a long generation.
REQUEST_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
# Time to first token.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
# Classification and one Triton call: sub-millisecond to a few seconds.
STAGE_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
# Rows per Triton call.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Padded tokens per Triton call (rows x sequence length).
BATCH_TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)

# One semantic cache lookup: tens of microseconds (small partition) to a millisecond or so.
CACHE_LOOKUP_BUCKETS = (
    0.00002,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.05,
)
# Similarity of cache hits (always at or above the configured threshold).
SIMILARITY_BUCKETS = (0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99, 0.999, 1.0)

# ---------------------------------------------------------------------------- label sets

ENDPOINTS = frozenset(
    {"chat_completions", "completions", "models", "metrics", "health", "classify", "ready"}
)
TOKEN_KINDS = frozenset({"prompt", "completion"})
PII_ACTIONS = frozenset({"redact", "mask", "reject", "allow", "route"})
CACHE_RESULTS = frozenset({"hit", "miss"})
# cache_evictions_total{reason}: LRU at capacity, or past the TTL.
CACHE_EVICTION_REASONS = frozenset({"capacity", "expired"})
# router_svc.cache.pair_model's verdicts on a candidate hit.
VERIFIER_OUTCOMES = frozenset({"served", "refused", "busy", "error", "same_text"})
# Why a model was chosen: router_svc.core.selection's reason codes, plus the cache short-cut.
ROUTING_REASONS = frozenset({*REASONS, "cache_hit"})
# errors_total{reason}. Includes router_svc.backend.errors.UpstreamError reasons.
ERROR_REASONS = frozenset(
    {
        "bad_request",
        "unknown_model",
        "pii_rejected",
        "overloaded",
        "classifier_unavailable",
        "classifier_timeout",
        "backend_unreachable",
        "backend_timeout",
        "backend_error",
        "backend_bad_response",
        "backend_stream_aborted",
        "backend_busy",
        "backend_rate_limited",
        "circuit_open",
        "client_disconnected",
        "internal",
    }
)
# classifier_failures_total{stage}
CLASSIFIER_STAGES = frozenset({"tokenize", "queue", "triton", "decode", "timeout"})


class _UsageLike(Protocol):
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...


@dataclass(frozen=True)
class LabelBounds:
    """Maps arbitrary values onto fixed label sets; anything unknown becomes ``"other"``.

    Model names outside the configured set, unknown categories, PII types, reasons, stages and
    endpoints all count as ``"other"``, so a client cannot grow the number of series.
    """

    models: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset(CATEGORIES)
    pii_types: frozenset[str] = frozenset(PII_TYPES)
    routing_reasons: frozenset[str] = ROUTING_REASONS
    error_reasons: frozenset[str] = ERROR_REASONS
    stages: frozenset[str] = CLASSIFIER_STAGES
    endpoints: frozenset[str] = ENDPOINTS
    pii_actions: frozenset[str] = PII_ACTIONS

    @staticmethod
    def _bound(value: object, allowed: frozenset[str]) -> str:
        return value if isinstance(value, str) and value in allowed else OTHER

    def model(self, name: object) -> str:
        return self._bound(name, self.models)

    def category(self, name: object) -> str:
        return self._bound(name, self.categories)

    def pii_type(self, name: object) -> str:
        return self._bound(name, self.pii_types)

    def routing_reason(self, reason: object) -> str:
        return self._bound(reason, self.routing_reasons)

    def error_reason(self, reason: object) -> str:
        return self._bound(reason, self.error_reasons)

    def stage(self, stage: object) -> str:
        return self._bound(stage, self.stages)

    def endpoint(self, endpoint: object) -> str:
        return self._bound(endpoint, self.endpoints)

    def pii_action(self, action: object) -> str:
        return self._bound(action, self.pii_actions)

    @staticmethod
    def status(code: object) -> str:
        """An HTTP status as text; anything outside 100-599 is ``"other"``."""
        return str(code) if isinstance(code, int) and 100 <= code <= 599 else OTHER


@dataclass(frozen=True)
class Metrics:
    """The router's metrics on one ``CollectorRegistry``.

    Each app builds its own (no globals), so tests can run several apps in one process. The
    ``count_*`` / ``observe_*`` helpers apply ``bounds``; the raw metric objects are there for
    anything else.
    """

    registry: CollectorRegistry
    bounds: LabelBounds
    requests_total: Counter
    routing_decisions_total: Counter
    classification_seconds: Histogram
    triton_seconds: Histogram
    triton_batch_size: Histogram
    triton_batch_tokens: Histogram
    queue_depth: Gauge
    request_seconds: Histogram
    backend_seconds: Histogram
    ttft_seconds: Histogram
    tokens_total: Counter
    pii_entities_total: Counter
    errors_total: Counter
    classifier_failures_total: Counter
    cache_requests_total: Counter
    cache_entries: Gauge
    cache_stores_total: Counter
    cache_evictions_total: Counter
    cache_lookup_seconds: Histogram
    cache_hit_similarity: Histogram
    cache_backend_errors_total: Counter
    cache_verifications_total: Counter
    inflight_requests: Gauge
    triton_servers: Gauge
    fallbacks_total: Counter
    breaker_opens_total: Counter
    # (metric, label values) -> child: prometheus_client's labels() validates and locks on
    # every call, a few microseconds each, several times per request. Values are bounded.
    _children: dict[tuple[int, tuple[str, ...]], Any] = field(
        default_factory=dict, repr=False, compare=False)

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)`` (label values in the metric's label order), memoised."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    @classmethod
    def create(
        cls,
        registry: CollectorRegistry | None = None,
        *,
        models: Iterable[str] = (),
        categories: Iterable[str] | None = None,
        routing_reasons: Iterable[str] | None = None,
    ) -> Metrics:
        """All metrics on ``registry`` (a fresh one by default).

        ``models``: the configured backend model names (plus e.g. ``"auto"``); others are
        counted as ``"other"``. ``categories`` defaults to the label contract's list.
        """
        reg = registry if registry is not None else CollectorRegistry(auto_describe=True)
        bounds = LabelBounds(
            models=frozenset(models),
            categories=frozenset(categories) if categories is not None else frozenset(CATEGORIES),
            routing_reasons=(
                frozenset(routing_reasons) if routing_reasons is not None else ROUTING_REASONS
            ),
        )

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=reg)

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
        ) -> Histogram:
            return Histogram(PREFIX + name, doc, labels, registry=reg, buckets=buckets)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(PREFIX + name, doc, labels, registry=reg)

        metrics = cls(
            registry=reg,
            bounds=bounds,
            requests_total=counter(
                "requests_total", "Requests answered, by model and HTTP status", ("model", "status")
            ),
            routing_decisions_total=counter(
                "routing_decisions_total", "Routing decisions", ("category", "model", "reason")
            ),
            classification_seconds=histogram(
                "classification_seconds",
                "Classification time per request (tokenize, queue, Triton, decode)",
                STAGE_BUCKETS,
            ),
            triton_seconds=histogram(
                "triton_seconds", "Time of one Triton inference call", STAGE_BUCKETS
            ),
            triton_batch_size=histogram(
                "triton_batch_size", "Rows per Triton call", BATCH_SIZE_BUCKETS
            ),
            triton_batch_tokens=histogram(
                "triton_batch_tokens", "Padded tokens per Triton call", BATCH_TOKEN_BUCKETS
            ),
            queue_depth=gauge("queue_depth", "Inference requests waiting in the batcher"),
            request_seconds=histogram(
                "request_seconds", "End-to-end request time", REQUEST_BUCKETS, ("endpoint",)
            ),
            backend_seconds=histogram(
                "backend_seconds", "Backend call time (whole answer)", REQUEST_BUCKETS, ("model",)
            ),
            ttft_seconds=histogram(
                "ttft_seconds", "Backend time to first streamed token", TTFT_BUCKETS, ("model",)
            ),
            tokens_total=counter("tokens_total", "Tokens reported by backends", ("model", "kind")),
            pii_entities_total=counter(
                "pii_entities_total", "PII entities found, by action", ("type", "action")
            ),
            errors_total=counter("errors_total", "Errors by reason", ("reason",)),
            classifier_failures_total=counter(
                "classifier_failures_total", "Classifier failures by stage", ("stage",)
            ),
            cache_requests_total=counter(
                "cache_requests_total", "Semantic cache lookups", ("result",)
            ),
            cache_entries=gauge("cache_entries", "Entries in the semantic cache"),
            cache_stores_total=counter("cache_stores_total", "Answers stored in the cache"),
            cache_evictions_total=counter(
                "cache_evictions_total", "Cache entries removed, by reason", ("reason",)
            ),
            cache_lookup_seconds=histogram(
                "cache_lookup_seconds", "Time of one cache lookup", CACHE_LOOKUP_BUCKETS
            ),
            cache_hit_similarity=histogram(
                "cache_hit_similarity", "Similarity of cache hits", SIMILARITY_BUCKETS
            ),
            cache_backend_errors_total=counter(
                "cache_backend_errors_total",
                "Shared cache (Milvus) calls that failed or ran past their deadline; the "
                "cache was bypassed", ("op",)),
            cache_verifications_total=counter(
                "cache_verifications_total",
                "Candidate cache hits judged by the hit verifier's model (cache.verifier): "
                "served, refused, busy or error (both a miss), same_text (no model call)",
                ("outcome",)),
            inflight_requests=gauge("inflight_requests", "Requests being handled"),
            triton_servers=gauge("triton_servers",
                                 "Triton servers of triton.url, by state (up, down)", ("state",)),
            fallbacks_total=counter(
                "fallbacks_total", "Requests sent on to another model after a backend failed",
                ("from_model", "to_model", "reason")),
            breaker_opens_total=counter(
                "breaker_opens_total", "Times a backend's circuit breaker opened", ("model",)),
        )
        for result in sorted(CACHE_RESULTS):  # both series exist from the start
            metrics.cache_requests_total.labels(result=result)
        for reason in sorted(CACHE_EVICTION_REASONS):
            metrics.cache_evictions_total.labels(reason=reason)
        return metrics

    # ------------------------------------------------------------------------ bounded helpers

    def count_request(self, model: object, status: object) -> None:
        self._child(self.requests_total, self.bounds.model(model),
                    self.bounds.status(status)).inc()

    def count_routing(self, category: object, model: object, reason: object) -> None:
        self._child(self.routing_decisions_total, self.bounds.category(category),
                    self.bounds.model(model), self.bounds.routing_reason(reason)).inc()

    def count_fallback(self, from_model: object, to_model: object, reason: object) -> None:
        self._child(self.fallbacks_total, self.bounds.model(from_model),
                    self.bounds.model(to_model), self.bounds.error_reason(reason)).inc()

    def count_breaker_open(self, model: object) -> None:
        self._child(self.breaker_opens_total, self.bounds.model(model)).inc()

    def count_error(self, reason: object) -> None:
        self.errors_total.labels(reason=self.bounds.error_reason(reason)).inc()

    def count_classifier_failure(self, stage: object) -> None:
        self.classifier_failures_total.labels(stage=self.bounds.stage(stage)).inc()

    def count_pii(self, pii_type: object, action: object, n: int = 1) -> None:
        self.pii_entities_total.labels(
            type=self.bounds.pii_type(pii_type), action=self.bounds.pii_action(action)
        ).inc(n)

    def count_tokens(self, model: object, usage: _UsageLike | None) -> None:
        if usage is None:
            return
        label = self.bounds.model(model)
        self._child(self.tokens_total, label, "prompt").inc(max(0, usage.prompt_tokens))
        self._child(self.tokens_total, label, "completion").inc(max(0, usage.completion_tokens))

    def count_cache(self, hit: bool) -> None:
        self._child(self.cache_requests_total, "hit" if hit else "miss").inc()

    # The router_svc.cache.store.CacheEvents protocol: an HnswCache created with
    # events=metrics reports here.
    def observe_cache_lookup(self, seconds: float, similarity: float | None) -> None:
        """One lookup: hit (with its similarity) or miss, and how long it took."""
        self.count_cache(similarity is not None)
        self.cache_lookup_seconds.observe(seconds)
        if similarity is not None:
            self.cache_hit_similarity.observe(similarity)

    def count_cache_verification(self, outcome: str) -> None:
        self._child(self.cache_verifications_total,
                    outcome if outcome in VERIFIER_OUTCOMES else OTHER).inc()

    def count_cache_store(self) -> None:
        self.cache_stores_total.inc()

    def count_cache_evictions(self, reason: str, n: int = 1) -> None:
        label = reason if reason in CACHE_EVICTION_REASONS else OTHER
        self.cache_evictions_total.labels(reason=label).inc(n)

    def set_cache_entries(self, n: int) -> None:
        self.cache_entries.set(n)

    def count_cache_backend_error(self, op: str) -> None:
        """A shared cache call (``router_svc.cache.milvus``; ``op`` from its short list)
        failed or timed out and was bypassed."""
        self._child(self.cache_backend_errors_total, op).inc()

    def observe_request(self, endpoint: object, seconds: float) -> None:
        self._child(self.request_seconds, self.bounds.endpoint(endpoint)).observe(seconds)

    def observe_backend(self, model: object, seconds: float) -> None:
        self._child(self.backend_seconds, self.bounds.model(model)).observe(seconds)

    def observe_ttft(self, model: object, seconds: float) -> None:
        self._child(self.ttft_seconds, self.bounds.model(model)).observe(seconds)

    def observe_triton_batch(self, seconds: float, rows: int, tokens: int) -> None:
        self.triton_seconds.observe(seconds)
        self.triton_batch_size.observe(rows)
        self.triton_batch_tokens.observe(tokens)


def render(metrics: Metrics, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition for ``/metrics`` and its Content-Type (OpenMetrics if ``accept`` asks).

    The content type carries parameters (``version``, ``charset``): set it as the
    ``Content-Type`` header, not as aiohttp's ``content_type=`` argument.
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(metrics.registry), content_type
