"""The OpenTelemetry SDK for the router's traces (the ``tracing`` config section).

``Tracing(config)`` is started and shut down once with the runtime (``flow.runtime``): a
``TracerProvider`` of its own (never the process-wide one, so two routers in one process,
as in the tests, keep their spans apart) with the service's resource and parent-based
sampling at ``sample_ratio`` for new traces, and a ``BatchSpanProcessor`` that hands finished
spans to the OTLP exporter (gRPC or HTTP/protobuf) on its own thread, off the event loop.
``shutdown`` flushes what is still queued. Tests pass ``exporter`` (e.g. the SDK's
``InMemorySpanExporter``) in place of OTLP; ``enabled: false`` still means no spans at all.

``recorder`` (an ``SdkRecorder``) is what the request flow is given: it asks the provider's
sampler about each new request and turns a finished request's span records
(``tracing.spans``) into the SDK's ``ReadableSpan``s for the batch processor: the SDK's data
model, processor and exporter, without its per-span bookkeeping on the request's path.

Off, nothing of the SDK is imported and ``recorder`` is None: the request flow then uses
``spans.NO_TRACE`` and every span call below it is one context-variable read.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import metadata
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from router_svc.config.loading import ConfigError, TracingConfig

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanProcessor

    from router_svc.tracing.spans import RequestTrace

log = logging.getLogger(__name__)

# Each OTLP export waits at most this long (the exporter retries within it); a collector
# that is down costs the exporter thread that long per batch, never a request.
EXPORT_TIMEOUT_S = 5.0
# The longest the router's stop waits for the last spans to go out.
SHUTDOWN_TIMEOUT_S = 10.0


def _version() -> str:
    try:
        return metadata.version("router-svc")
    except metadata.PackageNotFoundError:
        return "unknown"


def otlp_exporter(config: TracingConfig) -> SpanExporter:
    """The OTLP exporter the config names (``tracing.protocol``, ``tracing.endpoint``)."""
    try:
        if config.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            u = urlsplit(config.endpoint)
            return OTLPSpanExporter(endpoint=config.endpoint, insecure=u.scheme == "http",
                                    timeout=EXPORT_TIMEOUT_S)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )
    except ImportError as e:
        # xds-protos carries an old copy of opentelemetry-proto's files; installed after it,
        # the exporter cannot import its messages.
        raise ConfigError([
            f"tracing.enabled: the OTLP exporter cannot be imported ({e}); reinstall the SDK's "
            "messages over the copy in xds-protos: pip install --no-deps --force-reinstall "
            "opentelemetry-proto (with -c constraints.txt)"]) from e
    return HttpSpanExporter(endpoint=config.endpoint, timeout=EXPORT_TIMEOUT_S)


class SdkRecorder:
    """``spans.Recorder`` over an SDK provider and span processor."""

    def __init__(self, provider: TracerProvider, processor: SpanProcessor,
                 version: str) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        class _Resource(Resource):
            """The provider's resource with its hash computed once: the OTLP encoder groups
            spans by resource and the SDK's hash JSON-encodes the attributes on every span
            (15% of the exporter's time)."""

            def __init__(self, r: Resource) -> None:
                super().__init__(r.attributes, r.schema_url)
                self._hash = super().__hash__()

            def __hash__(self) -> int:
                return self._hash

        self._sampler = provider.sampler
        self._resource = _Resource(provider.resource)
        self._on_end = processor.on_end
        self._scope = InstrumentationScope("router_svc", version)
        self._server = SpanKind.SERVER
        self._ReadableSpan, self._Event, self._SpanContext = ReadableSpan, Event, SpanContext
        self._Status, self._ERROR, self._TraceFlags = Status, StatusCode.ERROR, TraceFlags
        self._unset = Status(StatusCode.UNSET)

    def sample(self, parent: Context, trace_id: int, name: str) -> bool:
        return self._sampler.should_sample(parent, trace_id, name,
                                           self._server).decision.is_sampled()

    def record(self, request: RequestTrace) -> None:
        """The request's spans, made the SDK's and handed to the batch processor."""
        tid, state = request.trace_id, request.trace_state
        flags = self._TraceFlags(request.flags)
        ctx, status, event = self._SpanContext, self._Status, self._Event
        top = request.span
        for s in (*request.spans, top):
            # The request's parent is the client's span (remote), or none: a new trace.
            parent = request.remote_parent if s is top else ctx(tid, s.parent_id, False,
                                                                  flags, state)
            self._on_end(self._ReadableSpan(
                name=s.name, context=ctx(tid, s.span_id, False, flags, state), parent=parent,
                resource=self._resource, attributes=s.attributes,
                events=[event(n, timestamp=t) for n, t in s.events], kind=s.kind,
                status=status(self._ERROR, s.error) if s.error is not None else self._unset,
                start_time=s.start_ns, end_time=s.end_ns, instrumentation_scope=self._scope))


class Tracing:
    """The router's tracer provider: ``start()``, ``recorder`` (None while off),
    ``shutdown()``."""

    def __init__(self, config: TracingConfig, exporter: SpanExporter | None = None) -> None:
        self.config = config
        self.exporter = exporter  # None: OTLP as configured
        self.provider: TracerProvider | None = None
        self.recorder: SdkRecorder | None = None

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def start(self) -> None:
        c = self.config
        if not c.enabled or self.provider is not None:
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        version = _version()
        provider = TracerProvider(
            resource=Resource.create({"service.name": c.service_name,
                                      "service.version": version}),
            sampler=ParentBased(TraceIdRatioBased(c.sample_ratio)))
        exporter = self.exporter if self.exporter is not None else otlp_exporter(c)
        processor = BatchSpanProcessor(exporter)
        provider.add_span_processor(processor)  # its shutdown flushes the processor
        self.provider = provider
        self.recorder = SdkRecorder(provider, processor, version)
        where = "an injected exporter" if self.exporter is not None else \
            f"{c.endpoint} ({c.protocol})"
        log.info("tracing on: spans of %s to %s, %g of new traces sampled", c.service_name,
                 where, c.sample_ratio)

    def force_flush(self) -> bool:
        """Export every finished span now (blocking; tests)."""
        return self.provider.force_flush() if self.provider is not None else True

    async def shutdown(self) -> None:
        """Flush the spans still queued and stop the exporter (off the event loop, bounded by
        ``SHUTDOWN_TIMEOUT_S``)."""
        provider, self.provider, self.recorder = self.provider, None, None
        if provider is None:
            return
        try:
            await asyncio.wait_for(asyncio.to_thread(provider.shutdown), SHUTDOWN_TIMEOUT_S)
        except TimeoutError:
            log.warning("tracing: spans not flushed within %gs at shutdown (collector at %s "
                        "unreachable?)", SHUTDOWN_TIMEOUT_S, self.config.endpoint)

